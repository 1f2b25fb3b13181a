// Package scheduler keeps the slot pool and decides where subtasks run. It is a pure
// data structure driven by the jobmanager's loop: no I/O, no clock, no locks.
//
// Slot sharing: one slot holds one subtask of every vertex of a job, so a job needs as
// many slots as its highest parallelism, and subtask i of every vertex runs in slot i.
package scheduler

import (
	"cmp"
	"fmt"
	"slices"
)

// TaskManager is one registered task manager as the pool sees it.
type TaskManager struct {
	ID      string
	Address string
	Slots   int
	Used    int
	Alive   bool
	BuildID string
}

// Free is the number of free slots.
func (t *TaskManager) Free() int {
	if !t.Alive {
		return 0
	}
	return t.Slots - t.Used
}

// Pool is the set of task managers and their slots.
type Pool struct {
	tms map[string]*TaskManager
}

// NewPool returns an empty pool.
func NewPool() *Pool { return &Pool{tms: map[string]*TaskManager{}} }

// Add registers (or re-registers) a task manager with all slots free.
func (p *Pool) Add(id, address string, slots int, buildID string) {
	p.tms[id] = &TaskManager{ID: id, Address: address, Slots: slots, Alive: true, BuildID: buildID}
}

// Remove forgets a task manager; its slots are gone.
func (p *Pool) Remove(id string) { delete(p.tms, id) }

// Get returns a task manager or nil.
func (p *Pool) Get(id string) *TaskManager { return p.tms[id] }

// List returns the task managers sorted by ID.
func (p *Pool) List() []*TaskManager {
	out := make([]*TaskManager, 0, len(p.tms))
	for _, t := range p.tms {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *TaskManager) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// FreeSlots is the number of free slots over live task managers.
func (p *Pool) FreeSlots() int {
	n := 0
	for _, t := range p.tms {
		n += t.Free()
	}
	return n
}

// Allocate takes n slots and returns the task manager of each slot index. It spreads
// slots over task managers: every pick takes a slot of the task manager with the most
// free slots (ties broken by ID), so subtasks are distributed evenly. preferred, when
// not nil, names a task manager for some slot indices (the previous location, for local
// recovery); it is honoured when that task manager has a free slot. Allocate takes
// nothing and returns an error when the pool has fewer than n free slots.
func (p *Pool) Allocate(n int, preferred map[int]string) ([]string, error) {
	if free := p.FreeSlots(); free < n {
		return nil, fmt.Errorf("need %d slots, %d free", n, free)
	}
	out := make([]string, n)
	for i := 0; i < n; i++ {
		if id, ok := preferred[i]; ok {
			if t := p.tms[id]; t != nil && t.Free() > 0 {
				t.Used++
				out[i] = id
			}
		}
	}
	for i := 0; i < n; i++ {
		if out[i] != "" {
			continue
		}
		best := (*TaskManager)(nil)
		for _, t := range p.List() {
			if t.Free() > 0 && (best == nil || t.Free() > best.Free()) {
				best = t
			}
		}
		best.Used++
		out[i] = best.ID
	}
	return out, nil
}

// Release frees the slots of an allocation; slots of removed task managers are ignored.
func (p *Pool) Release(slots []string) {
	for _, id := range slots {
		if t := p.tms[id]; t != nil && t.Used > 0 {
			t.Used--
		}
	}
}
