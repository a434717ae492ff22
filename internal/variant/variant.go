// Package variant keeps the values a setting may take in one list, so
// that what the code checks, the message that refuses a value and the
// help that names the values all come from that list: adding a value is
// one edit (gnet's LoadBalancing constants are the model).
package variant

import (
	"flag"
	"fmt"
	"slices"
	"strings"
)

// A List is the values of one setting, in the order messages give them.
type List []string

// Has says whether v is one of the list's values.
func (l List) Has(v string) bool { return slices.Contains(l, v) }

// Words names the values for a message: "a", "a or b", "a, b or c".
func (l List) Words() string {
	switch len(l) {
	case 0:
		return ""
	case 1:
		return l[0]
	}
	return strings.Join(l[:len(l)-1], ", ") + " or " + l[len(l)-1]
}

// Var defines on fs the flag name, whose value must be one of the list's
// and is stored in p (its default: *p). A value not on the list is
// refused while the flags are parsed, in the list's words: `invalid
// value "x" for flag -name: want a, b or c`.
func (l List) Var(fs *flag.FlagSet, p *string, name, usage string) {
	fs.Var(value{p: p, l: l}, name, usage)
}

// value is a flag.Value that takes only the values of its list.
type value struct {
	p *string
	l List
}

func (v value) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v value) Set(s string) error {
	if !v.l.Has(s) {
		return fmt.Errorf("want %s", v.l.Words())
	}
	*v.p = s
	return nil
}
