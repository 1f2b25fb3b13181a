// Package e2e holds Sluice's end-to-end tests: they build the real jobmanager,
// taskmanager and streamctl binaries once, start them as separate processes on
// loopback, drive them through streamctl only, and check what a user would see (exit
// codes, one-line errors, job states, slot usage, the exact output files).
//
// The tests are skipped with -short. Run them with
//
//	go test -count=1 ./tests/e2e/
//
// Each process's log goes to a file in the test's temporary directory; when a test
// fails (or always, with SLUICE_E2E_LOGS=1 and -v), the tail of every log is printed.
package e2e
