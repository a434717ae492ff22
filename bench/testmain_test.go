package main

import (
	"testing"

	"github.com/lbbench/lbbench/internal/proctest"
)

// TestMain removes the binaries the tests built once they have run.
func TestMain(m *testing.M) { proctest.Main(m) }
