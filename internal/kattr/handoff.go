package kattr

// HandoffTotals reads a table of handoffs, n (acceptor, server,
// connections) rows given by row: how many processes accepted, how many
// served, the connections served by another process than the one that
// accepted them, and all the connections. acceptwatch and loadgen both
// summarise their handoff tables with it.
func HandoffTotals[P comparable](n int, row func(i int) (acceptor, server P, conns int64)) (accepting, serving int, handed, total int64) {
	acc, srv := map[P]bool{}, map[P]bool{}
	for i := range n {
		a, s, c := row(i)
		acc[a], srv[s] = true, true
		total += c
		if a != s {
			handed += c
		}
	}
	return len(acc), len(srv), handed, total
}
