package inpod_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
)

// TestForeignTable: a table named inpod.TableName that another program
// created with the owner or persist flag is neither deleted by Remove nor
// written into by Install; both say which table and why, and once its
// creator removes it Skiff's rules install and remove as usual.
func TestForeignTable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint32
		// orphan closes the creator's socket before Skiff acts.
		orphan bool
		want   string // in the error
	}{
		{name: "owned", flags: inpodtest.TableOwner, want: "owner flag (held by netlink port"},
		{name: "owned persistent", flags: inpodtest.TableOwner | inpodtest.TablePersist, want: "owner and persist flags (held by netlink port"},
		{name: "orphaned persistent", flags: inpodtest.TableOwner | inpodtest.TablePersist, orphan: true, want: "persist flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := newTopology(t)
			var r inpod.Rules
			if err := r.Install(top.pod.File); err != nil {
				t.Fatal(err)
			}
			release := inpodtest.ForeignTable(t, top.pod, tc.flags)
			if tc.orphan {
				release()
			}
			foreignThere := func() bool {
				t.Helper()
				st, err := r.Inspect(top.pod.File)
				if err != nil {
					t.Fatal(err)
				}
				return st.Foreign
			}
			checkRefused := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, inpod.ErrForeignTable) {
					t.Fatalf("%s over a foreign table: %v, want ErrForeignTable", op, err)
				}
				if msg := err.Error(); !strings.Contains(msg, "inet "+inpod.TableName) || !strings.Contains(msg, tc.want) {
					t.Errorf("%s error %q does not name table inet %s and %q", op, msg, inpod.TableName, tc.want)
				}
				if !foreignThere() {
					t.Errorf("after %s: the foreign table is gone", op)
				}
			}

			checkRefused("Remove", r.Remove(top.pod.File))
			checkRefused("Install", r.Install(top.pod.File))
			st, err := r.Inspect(top.pod.File)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Table || !st.Foreign || st.Complete() || !strings.Contains(st.String(), "another program") {
				t.Errorf("Inspect over a foreign table: %+v (%s), want a foreign, incomplete table", st, st)
			}
			if st.RoutingRule || st.LocalRoute {
				t.Errorf("refused Install wrote routing anyway: %s", st)
			}

			// The creator removes its table: an owned one goes with its
			// socket; a persistent one stays orphaned until deleted.
			release()
			if tc.flags&inpodtest.TablePersist != 0 {
				conn, err := nftables.New(nftables.WithNetNSFd(int(top.pod.File.Fd())))
				if err != nil {
					t.Fatal(err)
				}
				conn.DelTable(&nftables.Table{Name: inpod.TableName, Family: nftables.TableFamilyINet})
				if err := conn.Flush(); err != nil {
					t.Fatalf("deleting the orphaned table: %v", err)
				}
			}
			if foreignThere() {
				t.Fatal("the foreign table outlived its creator's removal")
			}
			if err := r.Install(top.pod.File); err != nil {
				t.Fatal(err)
			}
			if st, err := r.Inspect(top.pod.File); err != nil || !st.Complete() {
				t.Fatalf("after the foreign table went, Install gives %s, %v", st, err)
			}
			if err := r.Remove(top.pod.File); err != nil {
				t.Fatal(err)
			}
			if st, err := r.Inspect(top.pod.File); err != nil || !st.Absent() {
				t.Fatalf("after Remove: %s, %v", st, err)
			}
		})
	}
}
