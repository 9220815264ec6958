// Command pie releases its own pages as a position-independent binary,
// whose RELRO mapping is read-only but holds the loader's relocations,
// then uses relocated data: TestReleasePIE runs it.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/skiffmesh/skiff/pkg/exepages"
)

func main() {
	res, err := exepages.Release()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	m := map[string]any{"err": errors.New("relocated"), "n": 1}
	fmt.Printf("released %d of %d bytes; %v\n", res.Before-res.After, res.Before, m["err"])
}
