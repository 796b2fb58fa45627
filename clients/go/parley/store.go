package parley

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// Pending is a message in the outbox: sent (or to be sent) and not yet accepted.
type Pending struct {
	ClientMsgID  string `json:"client_msg_id"`
	Conversation string `json:"conversation"`
	Body         string `json:"body"`
	// Seq orders the outbox: messages are (re)sent in the order Send was called.
	Seq int64 `json:"seq"`
}

// State is what a client keeps between connections and, with a persistent Store, between
// process restarts: the sync token, the per-conversation cursors (the last seq handed to the
// app) and the outbox.
type State struct {
	Since   string             `json:"since"`
	Cursors map[string]int64   `json:"cursors"`
	Outbox  map[string]Pending `json:"outbox"`
}

// Store persists a client's State. Save is called after every change with the whole state;
// an implementation must make it durable before returning if it is to survive a restart.
type Store interface {
	Load() (State, error)
	Save(State) error
}

// MemoryStore keeps the state in memory: it survives reconnects, not the process.
type MemoryStore struct {
	mu sync.Mutex
	st State
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// Load returns a copy of the state.
func (m *MemoryStore) Load() (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.clone(), nil
}

// Save replaces the state.
func (m *MemoryStore) Save(s State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st = s.clone()
	return nil
}

// FileStore keeps the state in one JSON file, replaced atomically (write, fsync, rename) on
// every Save, so a process restart loses neither the outbox nor the cursors.
type FileStore struct {
	path string
	mu   sync.Mutex
}

// NewFileStore returns a FileStore at path; the file is created on the first Save.
func NewFileStore(path string) *FileStore { return &FileStore{path: path} }

// Load reads the file; a missing file is an empty state.
func (f *FileStore) Load() (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("parley: store %s: %w", f.path, err)
	}
	return s, nil
}

// Save writes the state to a temporary file, syncs it and renames it over the file.
func (f *FileStore) Save(s State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), filepath.Base(f.path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), f.path)
}

func (s State) clone() State {
	out := State{Since: s.Since, Cursors: map[string]int64{}, Outbox: map[string]Pending{}}
	for k, v := range s.Cursors {
		out.Cursors[k] = v
	}
	for k, v := range s.Outbox {
		out.Outbox[k] = v
	}
	return out
}

// ordered returns the outbox in Send order.
func (s State) ordered() []Pending {
	out := make([]Pending, 0, len(s.Outbox))
	for _, p := range s.Outbox {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}
