package store

import "errors"

var (
	// ErrNotFound: no gateway of that name is stored.
	ErrNotFound = errors.New("gateway not found")
	// ErrConflict: the stored revision is not the one the caller expected.
	ErrConflict = errors.New("revision conflict")
	// ErrUnavailable: etcd could not be reached or has no quorum.
	ErrUnavailable = errors.New("configuration store unavailable")
)
