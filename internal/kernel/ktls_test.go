package kernel

import (
	"errors"
	"strings"
	"testing"
)

func TestKernelTLS(t *testing.T) {
	fs, err := NewFS("testdata/ktls")
	if err != nil {
		t.Fatal(err)
	}
	got, err := fs.KernelTLS()
	if err != nil {
		t.Fatal(err)
	}
	if got["TlsTxSw"] != 1234 || got["TlsCurrTxSw"] != 2 || len(got) != 12 {
		t.Errorf("tls_stat %v", got)
	}

	fs, err = NewFS("testdata/noktls")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.KernelTLS(); !errors.Is(err, ErrNoKernelTLS) || !strings.Contains(err.Error(), `"mptcp"`) {
		t.Errorf("a kernel without the TLS ULP: %v, want ErrNoKernelTLS naming the ULPs it has", err)
	}
}
