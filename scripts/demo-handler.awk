# A tiny --exec handler: batfleet writes each batch as JSON lines, then
# {"batch_end":true}; the handler answers one line per batch: continue,
# stop or rollback. This one counts entries (into the file named by the
# variable count) and always continues.
$0 == "{\"batch_end\":true}" {
	print "continue"
	fflush()
	if (count != "") { print n > count; close(count) }
	next
}
{ n++ }
