package results

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/perf/benchunit"

	"github.com/lbbench/lbbench/internal/atomicfile"
)

// Report renders REPORT.md for a results folder: what to use first,
// then one table per section, then the charts grouped by section. Only
// sections with records appear.
func Report(s *Set, sections []Section) (md []byte, charts []ChartFile, err error) {
	var tables []*Table
	for i := range sections {
		t, err := s.Table(&sections[i])
		if err != nil {
			return nil, nil, err
		}
		if len(t.Rows) > 0 {
			tables = append(tables, t)
		}
	}
	var b bytes.Buffer
	b.WriteString("# lbbench report\n\n")
	if m := machine(s.Env); m != "" {
		fmt.Fprintf(&b, "%s\n\n", m)
	}
	b.WriteString("Each cell: the median of its samples ± the 95% confidence interval, as benchstat prints them (a median of 0: the interval's top, ≤x). " +
		"**Bold**: the best of its line. `~`: not significantly different from the best (Mann-Whitney U, alpha 0.05, benchstat's test); " +
		"unmarked: significantly worse. Lines where every sample of every column is equal are left out. " +
		"p-values: `benchstat.txt`; every sample: `raw.txt`, `json/`.\n\n")

	b.WriteString("## What to use\n\nThe best model per figure across each scenario's lines; +x%/−x%: its margin over the next model " +
		"that differs significantly; tied: models not significantly different from it on some line.\n\n")
	for _, t := range tables {
		if line := t.summary(); line != "" {
			if n := t.boundCells(); n > 0 {
				line += fmt.Sprintf(" († loadgen-bound samples in %d cells: see the table)", n)
			}
			fmt.Fprintf(&b, "- **%s**: %s\n", t.Section.Title, line)
		}
	}
	b.WriteString("\n")
	for _, t := range tables {
		t.markdown(&b)
	}
	for _, t := range tables {
		cs, err := t.Charts("svg")
		if err != nil {
			return nil, nil, err
		}
		if len(cs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "## Charts: %s\n\n", t.Section.Title)
		for _, c := range cs {
			fmt.Fprintf(&b, "![%s](charts/%s)\n\n", c.Title, c.Name)
		}
		charts = append(charts, cs...)
	}
	if len(s.Env) > 0 {
		fmt.Fprintf(&b, "## The machine\n\n```\n%s```\n", s.Env)
	}
	return b.Bytes(), charts, nil
}

// Write renders the report of dir into dir/REPORT.md and dir/charts/.
func Write(dir string, sections []Section) error {
	s, err := Read(dir)
	if err != nil {
		return err
	}
	if len(s.Records) == 0 {
		return fmt.Errorf("%s: no samples", dir)
	}
	md, charts, err := Report(s, sections)
	if err != nil {
		return err
	}
	cdir := filepath.Join(dir, "charts")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(cdir, "*.svg"))
	for _, f := range old {
		os.Remove(f) // charts of an earlier report that this one may not draw
	}
	for _, c := range charts {
		if err := atomicfile.WriteBytes(filepath.Join(cdir, c.Name), c.Data); err != nil {
			return err
		}
	}
	return atomicfile.WriteBytes(filepath.Join(dir, "REPORT.md"), md)
}

// machine is a one-line description from env.txt's "key: value" lines.
func machine(env []byte) string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(env))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
			kv[k] = v
		}
	}
	if kv["kernel"] == "" {
		return ""
	}
	m := fmt.Sprintf("Linux %s, %s (%s CPUs), %s, commit %s, %s. CPU sets: %s.",
		kv["kernel"], kv["cpu"], kv["cpu-count"], kv["go"], kv["commit"], kv["date"], kv["cpu-sets"])
	if v := kv["interrupted"]; v != "" {
		m += " **Interrupted** " + v + ": the figures are those of the completed samples."
	}
	return m
}

// markdown writes the section's heading, about, table and kernel counters.
func (t *Table) markdown(b *bytes.Buffer) {
	sec := t.Section
	fmt.Fprintf(b, "## %s\n\n%s\n\n", sec.Title, sec.About)
	if sec.MetricsAsColumns {
		t.metricsAsColumns(b)
	} else {
		t.modelsAsColumns(b)
	}
	if len(sec.Kernel) > 0 {
		t.kernelTable(b)
	}
}

func (t *Table) modelsAsColumns(b *bytes.Buffer) {
	if len(t.Lines) == 0 {
		b.WriteString("Every sample of every column is equal: nothing to compare.\n\n")
		return
	}
	b.WriteString("| | |")
	for _, c := range t.Cols {
		fmt.Fprintf(b, " %s |", colLabel(c))
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(t.Cols)) + "\n")
	prev := ""
	for _, l := range t.Lines {
		row := rowLabel(l.Row)
		label := row
		if row == prev {
			label = ""
		}
		prev = row
		fmt.Fprintf(b, "| %s | %s |", label, l.Metric.Label)
		for i, c := range l.Cells {
			if c == nil {
				b.WriteString(" |")
				continue
			}
			v := formatCell(c, l.Metric.Unit)
			switch {
			case c.Best:
				v = "**" + v + "**"
			case c.Tie:
				v += " ~"
			}
			if k := t.Bound[rowCol{l.Row, t.Cols[i]}]; k > 0 {
				v += fmt.Sprintf(" †%d", k)
			}
			fmt.Fprintf(b, " %s |", v)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	t.boundNote(b)
}

// boundNote lists the cells with samples that loadgen itself limited
// (its self-check), with what the self-check saw: their figures are the
// load generator's limit, not the server's.
func (t *Table) boundNote(b *bytes.Buffer) {
	var lines []string
	for _, row := range t.Rows {
		for _, col := range t.Cols {
			k := t.Bound[rowCol{row, col}]
			if k == 0 {
				continue
			}
			var reasons []string
			for _, d := range t.Docs[row][col] {
				if d.SelfCheck.Bottleneck && len(reasons) < 3 {
					reasons = append(reasons, strings.Join(d.SelfCheck.Reasons, ", "))
				}
			}
			where := strings.TrimPrefix(strings.TrimSpace(rowLabel(row)+" "+colLabel(col)), " ")
			line := fmt.Sprintf("- %s: %d of %d samples", where, k, t.Samples[rowCol{row, col}])
			if len(reasons) > 0 {
				line += " (" + strings.Join(reasons, "; ") + ")"
			}
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		return
	}
	b.WriteString("†k: k of the cell's samples were limited by loadgen, not the server (loadgen's self-check: " +
		"it could not send as asked); the cell's figures include them and measure the pair, not the server alone.\n\n")
	b.WriteString(strings.Join(lines, "\n") + "\n\n")
}

// boundCells counts the cells with samples loadgen limited.
func (t *Table) boundCells() int {
	n := 0
	for _, k := range t.Bound {
		if k > 0 {
			n++
		}
	}
	return n
}

func (t *Table) metricsAsColumns(b *bytes.Buffer) {
	b.WriteString("| |")
	for _, m := range t.Section.Metrics {
		fmt.Fprintf(b, " %s |", m.Label)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(t.Section.Metrics)) + "\n")
	for _, row := range t.Rows {
		fmt.Fprintf(b, "| %s |", rowLabel(row))
		for _, m := range t.Section.Metrics {
			var v []float64
			for _, col := range t.Cols {
				v = append(v, t.Values[cellKey{row, col, m.Unit}]...)
			}
			if len(v) == 0 {
				b.WriteString(" |")
				continue
			}
			fmt.Fprintf(b, " %s |", formatValue(Median(v), m.Unit))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	t.boundNote(b)
}

// kernelTable: the median change of each named kernel counter over a
// sample, per row and column.
func (t *Table) kernelTable(b *bytes.Buffer) {
	fmt.Fprintf(b, "Kernel counters, median change per sample:\n\n| | |")
	for _, c := range t.Cols {
		fmt.Fprintf(b, " %s |", colLabel(c))
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(t.Cols)) + "\n")
	for _, row := range t.Rows {
		for i, k := range t.Section.Kernel {
			label := ""
			if i == 0 {
				label = rowLabel(row)
			}
			fmt.Fprintf(b, "| %s | %s |", label, k)
			for _, col := range t.Cols {
				if v, ok := t.KernelDelta(row, col, k); ok {
					fmt.Fprintf(b, " %s |", formatValue(v, ""))
				} else {
					b.WriteString(" |")
				}
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\n")
}

// summary says, for each summary metric, which column wins across the
// section's rows, by how much, and where another is as good.
func (t *Table) summary() string {
	var parts []string
	for _, m := range t.Section.Metrics {
		if !m.Summary {
			continue
		}
		var lines []*Line
		for _, l := range t.Lines {
			if l.Metric == m {
				lines = append(lines, l)
			}
		}
		if s := summarize(t, lines); s != "" {
			parts = append(parts, m.Label+" "+s)
		}
	}
	return strings.Join(parts, "; ")
}

// summarize names the column that is best (or as good as the best) on
// the most lines, with the range of its margin over the runner-up on the
// lines it wins alone, and the columns that tie with it. Equal counts
// go to the column with the best median on more lines, as the table's
// bold. Where no line has a significant difference it names no column:
// a winner picked from ties would be column order, not a result.
func summarize(t *Table, lines []*Line) string {
	if len(lines) == 0 {
		return ""
	}
	sc := scoreColumns(len(t.Cols), lines)
	if !sc.decided {
		if sc.tooFew {
			return fmt.Sprintf("not decided: %d samples each are too few for any difference to be significant", sc.fewest)
		}
		return "not decided: no difference is significant"
	}
	w := sc.winner()
	lo, hi, tieOrder := winMargins(t, lines, w)
	var b strings.Builder
	fmt.Fprintf(&b, "**%s**", colLabel(t.Cols[w]))
	if n := len(lines); sc.good[w] < n {
		fmt.Fprintf(&b, " on %d of %d lines", sc.good[w], n)
	}
	var notes []string
	if !math.IsInf(lo, 0) {
		sign := "+"
		if !lines[0].Higher {
			sign = "−"
		}
		switch {
		case hi < 0.005:
			notes = append(notes, "<1%")
		case math.Round(lo*100) == math.Round(hi*100):
			notes = append(notes, fmt.Sprintf("%s%.0f%%", sign, 100*lo))
		default:
			notes = append(notes, fmt.Sprintf("%s%.0f–%.0f%%", sign, 100*lo, 100*hi))
		}
	}
	if len(tieOrder) > 0 {
		notes = append(notes, "tied: "+strings.Join(tieOrder, ", "))
	}
	if len(notes) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(notes, "; "))
	}
	return b.String()
}

// columnScores count, per column, the lines where it is best or tied
// (good), best with no tie (alone) and best by median (bestMedian).
type columnScores struct {
	good, alone, bestMedian []int
	// decided: some cell is worse than its line's best; tooFew: a tie
	// had too few samples to be judged; fewest: the fewest samples of
	// a compared column.
	decided, tooFew bool
	fewest          int
}

func scoreColumns(cols int, lines []*Line) columnScores {
	sc := columnScores{good: make([]int, cols), alone: make([]int, cols), bestMedian: make([]int, cols)}
	for _, l := range lines {
		if l.Best() < 0 {
			continue // a kept line of equal values: no winner
		}
		sc.bestMedian[l.Best()]++
		tied := false
		for i, c := range l.Cells {
			if c == nil {
				continue
			}
			if sc.fewest == 0 || len(c.Values) < sc.fewest {
				sc.fewest = len(c.Values)
			}
			if c.Best || c.Tie {
				sc.good[i]++
				tied = tied || c.Tie
			} else {
				sc.decided = true
			}
			if c.Tie && len(c.Cmp.Warnings) > 0 {
				sc.tooFew = true
			}
		}
		if !tied {
			sc.alone[l.Best()]++
		}
	}
	return sc
}

// winner is the column good on most lines, then alone on most, then
// best by median on most; the first of equals.
func (sc columnScores) winner() int {
	w := 0
	for i := range sc.good {
		switch {
		case sc.good[i] != sc.good[w]:
			if sc.good[i] > sc.good[w] {
				w = i
			}
		case sc.alone[i] != sc.alone[w]:
			if sc.alone[i] > sc.alone[w] {
				w = i
			}
		case sc.bestMedian[i] > sc.bestMedian[w]:
			w = i
		}
	}
	return w
}

// winMargins are the smallest and largest margins of column w over the
// runner-up on the lines it is best on (±Inf: none), and the columns it
// ties with, in the order they first tie.
func winMargins(t *Table, lines []*Line, w int) (lo, hi float64, tieOrder []string) {
	lo, hi = math.Inf(1), math.Inf(-1)
	tiesWith := map[string]bool{}
	for _, l := range lines {
		if c := l.Cells[w]; c == nil || !(c.Best || c.Tie) {
			continue
		}
		// The columns as good as the winner on this line.
		for i, c := range l.Cells {
			if c != nil && i != w && (c.Best || c.Tie) {
				if name := colLabel(t.Cols[i]); !tiesWith[name] {
					tiesWith[name] = true
					tieOrder = append(tieOrder, name)
				}
			}
		}
		if !l.Cells[w].Best {
			continue
		}
		runnerUp := -1
		for i, c := range l.Cells {
			if c == nil || i == w || c.Tie {
				continue
			}
			if runnerUp < 0 || better(c.Median(), l.Cells[runnerUp].Median(), l.Higher) {
				runnerUp = i
			}
		}
		if runnerUp >= 0 {
			m := l.Margin(runnerUp)
			lo, hi = min(lo, m), max(hi, m)
		}
	}
	return lo, hi, tieOrder
}

// formatValue prints a value in its unit: seconds with SI prefixes (ms,
// µs), rates and counts with three significant digits, ratios near 1
// with three decimals.
// formatCell is a cell's median and interval as benchstat prints them,
// except around a median of zero, where a percentage means nothing: the
// interval's top is given instead.
func formatCell(c *Cell, unit string) string {
	m := c.Median()
	if math.IsInf(c.Summary.Lo, 0) || math.IsInf(c.Summary.Hi, 0) {
		return formatValue(m, unit) // too few samples for an interval
	}
	if formatValue(m, unit) == "0" && formatValue(c.Summary.Hi, unit) != "0" {
		return "0 (≤" + formatValue(c.Summary.Hi, unit) + ")"
	}
	return formatValue(m, unit) + " ±" + c.Summary.PctRangeString()
}

func formatValue(v float64, unit string) string {
	a := math.Abs(v)
	switch {
	case v == 0 || a < 1e-6:
		return "0" // 1e-9 stands for zero in benchmark files
	case strings.HasSuffix(unit, "sec") || strings.HasSuffix(unit, "sec/req"):
		return benchunit.Scale(v, benchunit.Decimal) + "s"
	case unit == "" && a < 1000:
		return trim(fmt.Sprintf("%.1f", v)) // a count (a kernel counter's change)
	case a >= 1000:
		return benchunit.Scale(v, benchunit.Decimal)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return trim(fmt.Sprintf("%.1f", v))
	case a < 0.01:
		return fmt.Sprintf("%.2g", v) // a small ratio (loss) keeps its digits
	}
	return fmt.Sprintf("%.3f", v)
}

func trim(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
