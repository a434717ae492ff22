// Package metrics holds the Prometheus pieces both programs share: a
// registry with the Go and process collectors, the handler, and a
// histogram that is exposed from counts kept elsewhere (shared memory).
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbbench/lbbench/internal/nativehist"
)

// NewRegistry returns a private registry with the Go and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves reg, with protobuf negotiation so that a Prometheus
// started with native histograms gets them.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})
}

// CountsHistogram is a prometheus.Metric built from nativehist.Counts: the
// same counts as a classic histogram (power-of-two bounds) and as a
// native histogram of schema 3. client_golang's const histograms offer
// one form or the other, not both.
type CountsHistogram struct {
	desc    *prometheus.Desc
	counts  *nativehist.Counts
	created time.Time
	labels  []*dto.LabelPair
}

// NewCountsHistogram wraps c for one Collect.
func NewCountsHistogram(desc *prometheus.Desc, c *nativehist.Counts, created time.Time, labelValues ...string) *CountsHistogram {
	return &CountsHistogram{desc: desc, counts: c, created: created, labels: prometheus.MakeLabelPairs(desc, labelValues)}
}

// Desc implements prometheus.Metric.
func (h *CountsHistogram) Desc() *prometheus.Desc { return h.desc }

// Write implements prometheus.Metric.
func (h *CountsHistogram) Write(m *dto.Metric) error {
	c := h.counts
	hist := &dto.Histogram{
		SampleCount:      proto.Uint64(c.Count),
		SampleSum:        proto.Float64(c.Sum),
		CreatedTimestamp: timestamppb.New(h.created),
		Schema:           proto.Int32(nativehist.Schema),
		ZeroThreshold:    proto.Float64(nativehist.ZeroThreshold),
		ZeroCount:        proto.Uint64(c.Zero),
	}
	for i, cum := range c.Cumulative() {
		hist.Bucket = append(hist.Bucket, &dto.Bucket{
			UpperBound:      proto.Float64(nativehist.ClassicBounds[i]),
			CumulativeCount: proto.Uint64(cum),
		})
	}
	// Native buckets: spans of consecutive non-empty keys, counts as
	// deltas from the previous non-empty bucket.
	var prev int64
	lastKey := 0
	for i, n := range c.Buckets {
		if n == 0 {
			continue
		}
		key := nativehist.MinKey + i
		if len(hist.PositiveSpan) == 0 || key != lastKey+1 {
			offset := int32(key)
			if len(hist.PositiveSpan) > 0 {
				offset = int32(key - lastKey - 1)
			}
			hist.PositiveSpan = append(hist.PositiveSpan, &dto.BucketSpan{Offset: proto.Int32(offset), Length: proto.Uint32(0)})
		}
		sp := hist.PositiveSpan[len(hist.PositiveSpan)-1]
		*sp.Length++
		hist.PositiveDelta = append(hist.PositiveDelta, int64(n)-prev)
		prev, lastKey = int64(n), key
	}
	if len(hist.PositiveSpan) == 0 && c.Zero == 0 {
		// An empty native histogram still needs a span to be told apart
		// from a classic one.
		hist.PositiveSpan = []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(0)}}
	}
	m.Histogram = hist
	m.Label = h.labels
	return nil
}
