package meetings

import "sync"

// meetingLocks are mutexes by meeting ID. A change takes its meeting's from
// reading the meeting to storing the change, and a reminder from reading
// the meeting again to posting: so a reminder is either posted before a
// cancel (or move) of its occurrence is stored, or it sees the change and
// is not posted. A per-meeting lock, not Service.mu: reminders need not
// wait for other meetings' changes, which talk to the homeserver.
type meetingLocks struct {
	mu    sync.Mutex
	locks map[string]*meetingLock
}

type meetingLock struct {
	mu    sync.Mutex
	users int
}

// lock locks meeting id and returns its unlock, which may be called more
// than once (a deferred call after an early one does nothing).
func (l *meetingLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*meetingLock{}
	}
	e := l.locks[id]
	if e == nil {
		e = &meetingLock{}
		l.locks[id] = e
	}
	e.users++
	l.mu.Unlock()
	e.mu.Lock()
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Unlock()
			l.mu.Lock()
			if e.users--; e.users == 0 {
				delete(l.locks, id)
			}
			l.mu.Unlock()
		})
	}
}
