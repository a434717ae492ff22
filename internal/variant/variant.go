// Package variant keeps the values a setting may take in one list, so
// that what the code checks, the message that refuses a value and the
// help that names the values all come from that list: adding a value is
// one edit (gnet's LoadBalancing constants are the model).
package variant

import (
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
