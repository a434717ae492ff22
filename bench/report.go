package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// cmdReport rewrites benchstat tables and REPORT.md of a results folder.
func cmdReport(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) != 1 {
		return usageErr("want one results folder")
	}
	raw, err := os.ReadFile(filepath.Join(args[0], "raw.txt"))
	if err != nil {
		return fmt.Errorf("%s: no raw.txt (not a results folder?)", args[0])
	}
	write := summarize
	// Made by bench peers: Peer/, PeerTLS/, PeerAttribution/ rows.
	if bytes.Contains(raw, []byte("\nBenchmarkPeer")) {
		write = summarizePeers
	}
	if err := write(args[0]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", filepath.Join(args[0], "REPORT.md"))
	return nil
}

// cmdCompare runs benchstat between two results folders.
func cmdCompare(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) != 2 {
		return usageErr("want OLD and NEW results folders")
	}
	var in []string
	for i, d := range args {
		raw := filepath.Join(d, "raw.txt")
		if _, err := os.Stat(raw); err != nil {
			return fmt.Errorf("%s: no raw.txt (not a results folder?)", d)
		}
		in = append(in, []string{"old", "new"}[i]+"="+raw)
	}
	return runBenchstatTo(stdout, append([]string{"-col", ".file", "-row", ".fullname", "-ignore", "kernel,cpu,go,cpu-count,net.ipv4.tcp_migrate_req"}, in...)...)
}
