package results

// A Section is how a scenario asks to be reported. Scenarios declare
// their sections next to their definition; the renderer follows the
// description and knows no scenario by name.
type Section struct {
	// Name is the benchmark base name the scenario's records carry
	// (".name", e.g. "Accept"); Filter, a benchproc filter, narrows the
	// records further (e.g. "/conn:close").
	Name, Filter string
	// Title and About head the section; About says what was measured,
	// with the scenario's own parameters.
	Title, About string
	// Rows is the benchproc projection of a table's rows, e.g.
	// "/workers@num,/conn"; Cols that of its columns, "/model" when
	// empty.
	Rows, Cols string
	// MetricsAsColumns lays a table out with the metrics as columns and
	// no comparison between columns (for measurements with no models).
	MetricsAsColumns bool
	// Metrics are the figures shown, in order.
	Metrics []Metric
	// Kernel names TcpExt/Tcp counters whose change over a sample is
	// shown per column (the median over the samples).
	Kernel []string
	// Charts are drawn below the tables.
	Charts []Chart
}

// A Metric is one figure of a section's table.
type Metric struct {
	// Unit is the benchmark unit; whether higher is better comes from
	// the results' own unit metadata.
	Unit  string
	Label string
	// Filter, a benchproc filter, limits the metric to some rows, e.g.
	// "/conn:close".
	Filter string
	// Summary puts the metric's winner in the report's "what to use".
	Summary bool
	// Keep shows the line even when every sample of every column is
	// equal: a computed reference, or zeros that are the finding.
	Keep bool
}

// ChartKind is a kind of chart.
type ChartKind int

const (
	// Share draws each worker's share of requests (or, for
	// connection-per-request rows, connections), busiest first, a bar
	// per column, one chart per row.
	Share ChartKind = iota
	// Spectrum draws the latency percentile spectrum (x: 1/(1-q) on a
	// log scale), a line per column, one chart per row.
	Spectrum
	// Scaling draws Unit's median against the numeric row key X, a line
	// per column, one chart per value of the other row keys.
	Scaling
	// Bars draws Unit's median per column, one chart per row.
	Bars
)

// A Chart is one chart a section asks for.
type Chart struct {
	Kind ChartKind
	// Filter (benchproc) limits the rows charted.
	Filter string
	// Unit and Label: the figure for Scaling and Bars.
	Unit, Label string
	// X is the row key on the x axis of a Scaling chart, e.g. "workers".
	X string
}
