package cli

import (
	"bytes"
	"errors"
	"flag"
	"testing"
)

func TestStop(t *testing.T) {
	var b bytes.Buffer
	if code, stop := Stop("loadgen", nil, &b); stop || code != 0 || b.Len() != 0 {
		t.Errorf("no error: code %d, stop %v, %q", code, stop, b.String())
	}
	if code, stop := Stop("loadgen", flag.ErrHelp, &b); !stop || code != 0 || b.Len() != 0 {
		t.Errorf("-h: code %d, stop %v, %q", code, stop, b.String())
	}
	if code, stop := Stop("loadgen", errors.New("-c 0: want at least 1"), &b); !stop || code != 2 || b.String() != "loadgen: -c 0: want at least 1\n" {
		t.Errorf("mistake: code %d, stop %v, %q", code, stop, b.String())
	}
}
