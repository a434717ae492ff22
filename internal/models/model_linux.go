package models

import (
	"fmt"
	"log"

	"github.com/lbbench/lbbench/internal/shm"
)

// host is what a model may use of the supervisor that runs it, and no
// more: the supervisor's process table, spawning, restarts and teardown
// stay its own.
type host interface {
	logger() *log.Logger
	// allowedCPUs are the CPUs the workers are pinned to, round-robin.
	allowedCPUs() []int
	// ownSlot is the supervisor's own counter slot (its accepts).
	ownSlot() *shm.Slot
	// lockWorkers takes the supervisor's lock and returns the current
	// process of each worker id (nil while one is replaced) and whether
	// the supervisor is stopping; unlockWorkers gives the lock back.
	// (A lock and an unlock rather than a callback: the single model
	// calls them per connection, and a closure through an interface
	// escapes to the heap.)
	lockWorkers() (procs []*proc, stopping bool)
	unlockWorkers()
	// slot is worker process p's counter slot.
	slot(p *proc) *shm.Slot
}

// A model is one way for worker processes to get their connections. It
// is everything that differs between the accept models; the supervisor
// (process table, spawn, watch, restart, teardown) and the serving path
// are the same for all of them. Each model lives in a file of its own
// (single_linux.go, shared_linux.go, reuseport_linux.go), so that two
// models can be read and diffed side by side.
type model interface {
	// listen sets up, in the supervisor and before any worker starts,
	// the sockets and objects the supervisor owns for the model.
	listen(h host) error
	// files are the files worker id inherits, by name, beyond the
	// counters and the control socket every worker gets. The caller
	// closes them once the worker has started.
	files(id int) ([]namedFile, error)
	// serve runs in the supervisor once every worker is up (single:
	// its accept loop). It returns at once for models without one.
	serve(h host)
	// stopAccepting is the first step of stopping: the supervisor's side
	// takes no more connections.
	stopAccepting()
	// listeners maps the inodes of the model's listening sockets to the
	// label they carry in the accept-queue metrics.
	listeners(procs []*proc) map[uint64]string
	// close releases what listen made. The supervisor calls it once, on
	// every way out.
	close()

	// source runs in a worker process: how the worker gets connections.
	source(w *worker) (source, error)

	// acceptName and dispatchName describe the model in
	// lbbench_target_info.
	acceptName() string
	dispatchName() string
}

// A source yields the connections a worker serves, as accepted
// non-blocking socket fds, until it is stopped.
type source interface {
	// run calls serve for every connection and returns once the source
	// is stopped (having handed over what was already queued for this
	// worker) or has failed for good.
	run(serve func(fd int))
	// stop makes run return soon.
	stop()
	// inode is the listening socket's inode (0 when the worker has none).
	inode() uint64
}

// newModel is the one place that tells the models apart by name. It
// checks the flags that belong to one model only.
func newModel(c *Config) (model, error) {
	switch c.Model {
	case Single:
		return newSingle(c)
	case Shared:
		return newShared(c)
	case ReusePort:
		return newReusePort(c)
	}
	return nil, fmt.Errorf("unknown model %q (want %s)", c.Model, Models.Words())
}
