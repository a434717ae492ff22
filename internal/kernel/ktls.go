package kernel

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Kernel TLS (kTLS): after a user-space handshake, a server may hand the
// record layer's keys to the kernel (setsockopt TCP_ULP "tls", then
// TLS_TX/TLS_RX) so that sendfile and plain writes are encrypted in the
// kernel, without a copy through user space. OpenSSL 3 does it when asked
// (nginx: ssl_conf_command Options KTLS) and falls back to user space,
// silently, when the kernel has no TLS ULP: so whether kTLS was used is
// read from the kernel's own counters, never assumed from the config.

// ErrNoKernelTLS says the kernel cannot do TLS: no "tls" in
// net.ipv4.tcp_available_ulp (built without CONFIG_TLS, or the module
// not loaded).
var ErrNoKernelTLS = errors.New("no kernel TLS")

// KernelTLS reads net/tls_stat, the kernel's TLS counters (TlsCurrTxSw,
// TlsTxSw, TlsTxDevice, TlsRxSw, ...: sockets whose records the kernel
// encrypted in software or a NIC offloaded). It fails with
// ErrNoKernelTLS, naming the ULPs there are, when the kernel has no TLS.
func (fs FS) KernelTLS() (map[string]uint64, error) {
	ulps, err := os.ReadFile(fs.path("sys", "net", "ipv4", "tcp_available_ulp"))
	if err != nil {
		return nil, err
	}
	if list := strings.Fields(string(ulps)); !slices.Contains(list, "tls") {
		return nil, fmt.Errorf("%w: net.ipv4.tcp_available_ulp is %q (CONFIG_TLS off, or the tls module not loaded)", ErrNoKernelTLS, strings.Join(list, " "))
	}
	b, err := os.ReadFile(fs.netPath("tls_stat"))
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("tls_stat line %q: %v", line, err)
		}
		out[f[0]] = v
	}
	return out, nil
}

// KernelTLS reads this machine's kernel TLS counters; see FS.KernelTLS.
func KernelTLS() (map[string]uint64, error) { return Proc.KernelTLS() }
