// Package results turns a results folder into the report people read:
// read (benchfmt) -> group (benchproc projections) -> judge (benchmath)
// -> render (Markdown and charts), the shape of benchstat. It knows no
// scenario by name: each scenario describes its own section (Section)
// and the renderer follows the description.
package results

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/rundoc"
)

// Set is one results folder as read: every benchmark record of raw.txt,
// the units' better direction, the loadgen document of every sample and
// the environment record.
type Set struct {
	Dir     string
	Records []*benchfmt.Result
	// Higher says, per unit, whether higher is better (from the
	// "Unit X better=..." lines).
	Higher map[string]bool
	// Docs are loadgen's documents by benchmark name, in file order.
	Docs map[string][]*rundoc.Doc
	Env  []byte
}

// Read reads dir/raw.txt, dir/json/*.json and dir/env.txt.
func Read(dir string) (*Set, error) {
	s := &Set{Dir: dir, Higher: map[string]bool{}, Docs: map[string][]*rundoc.Doc{}}
	raw, err := os.ReadFile(filepath.Join(dir, "raw.txt"))
	if err != nil {
		return nil, err
	}
	if err := s.readRecords(raw, "raw.txt"); err != nil {
		return nil, err
	}
	files, _ := filepath.Glob(filepath.Join(dir, "json", "*.json"))
	slices.Sort(files)
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			return nil, err
		}
		var d rundoc.Doc
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		s.Docs[d.Name] = append(s.Docs[d.Name], &d)
	}
	s.Env, _ = os.ReadFile(filepath.Join(dir, "env.txt"))
	return s, nil
}

// readRecords reads benchmark-format text. A syntax error is an error:
// the files are the suite's own.
func (s *Set) readRecords(b []byte, name string) error {
	r := benchfmt.NewReader(bytes.NewReader(b), name)
	for r.Scan() {
		switch rec := r.Result().(type) {
		case *benchfmt.Result:
			s.Records = append(s.Records, rec.Clone())
		case *benchfmt.UnitMetadata:
			if rec.Key == "better" {
				s.Higher[rec.Unit] = rec.Value == "higher"
			}
		case *benchfmt.SyntaxError:
			return rec
		}
	}
	return r.Err()
}
