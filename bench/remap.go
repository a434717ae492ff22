package main

import (
	"fmt"
	"os"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/churn"
)

// measureRemap measures, for groups of 1 to 2N reuseport listeners, the
// fraction of remapTuples fixed 4-tuples that land on another socket when one
// listener joins, against what modulo hashing and the kernel's
// reciprocal_scale predict.
// remapTuples is how many fixed 4-tuples the remap scenario follows.
const remapTuples = 2000

func measureRemap(p Params, res *resultsFile) error { return remapOf("tcp", "Remap", p, res) }

// measureUDPRemap is measureRemap for UDP flows: the fraction of fixed
// source ports whose datagrams reach another socket when one joins.
func measureUDPRemap(p Params, res *resultsFile) error { return remapOf("udp", "UDPRemap", p, res) }

func remapOf(proto, name string, p Params, res *resultsFile) error {
	const tuples = remapTuples
	for round := range p.Count {
		for n := 1; n <= max(2*p.CPUs, 4); n++ {
			// Fresh source ports each round: another sample of the hash.
			moved, err := churn.Remap(proto, n, tuples, 10000+(round%8)*2500) // below the ephemeral range
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "%s remap %d -> %d sockets: %.3f of %d 4-tuples moved (reciprocal_scale %.3f, modulo %.3f)\n",
				proto, n, n+1, moved, tuples, churn.ExpectedScale(n), churn.ExpectedModulo(n))
			err = res.add(&benchfmt.Result{Config: fileConfig(), Name: benchfmt.Name(fmt.Sprintf("%s/workers=%d", name, n)), Iters: tuples,
				Values: []benchfmt.Value{
					{Value: max(moved, 1e-9), Unit: "moved-fraction"},
					{Value: churn.ExpectedScale(n), Unit: "scale-fraction"},
					{Value: churn.ExpectedModulo(n), Unit: "modulo-fraction"},
				}}, "")
			if err != nil {
				return err
			}
		}
	}
	return nil
}
