package fleet

import (
	"cmp"
	"slices"
)

// assign computes the owner every live member agrees a group's partitions
// should have, from the same inputs on every member: the live members and
// each partition's current owner ("" for none). The result is
//
//   - balanced: each live member owns ⌊P/N⌋ or ⌈P/N⌉ partitions (members
//     that own more now get the larger share first, so fewer move);
//   - sticky: a partition stays with its current owner while that owner is
//     live and within its share, so a join or a leave moves only the
//     partitions it must;
//   - deterministic: ties are broken by member id, and free partitions are
//     handed out in partition order to members in id order.
//
// With no live member every partition is unowned; with more members than
// partitions the extra members own nothing (standbys).
func assign(parts int, live []string, current []string) []string {
	target := make([]string, parts)
	if len(live) == 0 {
		return target
	}
	members := slices.Clone(live)
	slices.Sort(members)
	members = slices.Compact(members)
	isLive := make(map[string]bool, len(members))
	owned := make(map[string]int, len(members))
	for _, m := range members {
		isLive[m] = true
	}
	for _, o := range current {
		if isLive[o] {
			owned[o]++
		}
	}
	// Shares: base for everyone, one more for the first P mod N members in
	// the order of how many they own now (most first), then id.
	order := slices.Clone(members)
	slices.SortStableFunc(order, func(a, b string) int { return cmp.Compare(owned[b], owned[a]) })
	base, extra := parts/len(members), parts%len(members)
	share := make(map[string]int, len(members))
	for i, m := range order {
		share[m] = base
		if i < extra {
			share[m]++
		}
	}
	kept := make(map[string]int, len(members))
	for p, o := range current {
		if p < parts && isLive[o] && kept[o] < share[o] {
			target[p] = o
			kept[o]++
		}
	}
	next := 0
	for p := range target {
		if target[p] != "" {
			continue
		}
		for kept[members[next]] >= share[members[next]] {
			next++
		}
		target[p] = members[next]
		kept[members[next]]++
	}
	return target
}
