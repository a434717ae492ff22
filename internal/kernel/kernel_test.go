package kernel

import "testing"

func fixture(t *testing.T) FS {
	t.Helper()
	fs, err := NewFS("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestTcpExt(t *testing.T) {
	ext, err := fixture(t).TcpExt()
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]uint64{"ListenOverflows": 7, "ListenDrops": 9, "TCPMigrateReqSuccess": 3, "TcpActiveOpens": 11, "TcpEstabResets": 2} {
		if ext[k] != want {
			t.Errorf("%s = %d, want %d", k, ext[k], want)
		}
	}
}

func TestSockstatAndStat(t *testing.T) {
	fs := fixture(t)
	if tw := fs.TimeWait(); tw != 2 {
		t.Errorf("TIME_WAIT %d, want 2", tw)
	}
	cpu, err := fs.ProcCPUSeconds(4242)
	if err != nil || cpu != 3 {
		t.Errorf("CPU seconds of a process named with a space: %v %v, want 3", cpu, err)
	}
	if _, err := fs.ProcCPUSeconds(1); err == nil {
		t.Error("no error for a pid the fixture lacks")
	}
}

func TestSysctlsAndHost(t *testing.T) {
	fs := fixture(t)
	s := fs.ReadSysctls()
	if s["net.core.somaxconn"] != "4096" || s["net.ipv4.tcp_migrate_req"] != "1" || s["net.ipv4.ip_local_port_range"] != "32768 60999" {
		t.Errorf("sysctls %v", s)
	}
	if s["net.ipv4.tcp_syncookies"] != "n/a" {
		t.Errorf("a missing sysctl reads %q, want n/a", s["net.ipv4.tcp_syncookies"])
	}
	h := fs.ReadHost()
	if h.Kernel != "6.18.0-fixture" || h.CPUModel == "" {
		t.Errorf("host %+v", h)
	}
}

func TestObserve(t *testing.T) {
	fs := fixture(t)
	before := fs.Take()
	after := before
	after.Counters = map[string]uint64{}
	for k, v := range before.Counters {
		after.Counters[k] = v
	}
	after.Counters["ListenDrops"] += 5
	o := fs.Observe(before, after)
	if o.Delta["ListenDrops"] != 5 || o.Delta["ListenOverflows"] != 0 || o.TimeWaitBefore != 2 {
		t.Errorf("observation %+v", o)
	}
}

func TestTree(t *testing.T) {
	fs := fixture(t)
	// 4243's parent is 4242 in the fixture.
	pids, err := fs.Tree(4242)
	if err != nil || len(pids) != 2 || pids[1] != 4243 {
		t.Fatalf("tree %v %v", pids, err)
	}
	cpu, _, err := fs.TreeCPUSeconds(4242)
	if err != nil || cpu != 6 {
		t.Errorf("tree CPU %v %v, want 6", cpu, err)
	}
}
