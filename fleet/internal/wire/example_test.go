package wire_test

import (
	"errors"
	"fmt"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet/internal/wire"
)

// The subjects of a journal: three micro endpoints and the epoch subject.
func ExampleSubjectsFor() {
	s := wire.SubjectsFor("main")
	fmt.Println(s.Pull)
	fmt.Println(s.Append)
	fmt.Println(s.Info)
	fmt.Println(s.Epoch)
	// Output:
	// batfleet.main.pull
	// batfleet.main.append
	// batfleet.main.info
	// batfleet.main.epoch
}

// A pull request round-trips through its wire form; a bad one is refused
// with the field and the rule, which the writer sends back as a 400.
func ExampleDecodePullRequest() {
	region := engine.RegionEntity("order:17").WithScope("shop").WithExact(0x1001)
	req, err := wire.DecodePullRequest(wire.EncodePullRequest(wire.PullRequest{Region: region, Position: 41, Started: true, Max: 64}))
	fmt.Println(req.Region.Identity(), req.Position, req.Started, req.Max, err)

	_, err = wire.DecodePullRequest(wire.EncodePullRequest(wire.PullRequest{Region: engine.RegionAll(), Max: 0}))
	var re *wire.RequestError
	if errors.As(err, &re) {
		fmt.Println(re.Code, re.Field)
	}
	// Output:
	// entity=order:17|scope=shop|fact=exact:1:1|clock=* 41 true 64 <nil>
	// 400 max
}
