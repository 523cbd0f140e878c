package engine_test

import (
	"errors"
	"fmt"

	"github.com/batfleet/batfleet/engine"
)

func ExampleRegion_Identity() {
	fmt.Println(engine.RegionAll().Identity())
	fmt.Println(engine.RegionEntity("entity:roundtrip").Identity())

	clock, err := engine.NewClockRange(1, 9)
	if err != nil {
		panic(err)
	}
	r := engine.RegionEntity("a").WithScope("s").WithExact(0xF007).WithClock(clock)
	fmt.Println(r.Identity())
	fmt.Println(r.Matches("a:child", "s", 0xF007, 5))

	// "*" is not a glob: omit the prefix to match every entity.
	err = engine.RegionEntity("*").Validate()
	fmt.Println(errors.Is(err, engine.ErrInvalidRegion), errors.Is(err, engine.ErrEntityPrefixStar))
	// Output:
	// entity=*|scope=*|fact=none|clock=*
	// entity=entity:roundtrip|scope=*|fact=none|clock=*
	// entity=a|scope=s|fact=exact:f:7|clock=1-9
	// true
	// true true
}
