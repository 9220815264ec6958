package installer

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestAddRemoveEntry(t *testing.T) {
	out, changed, err := AddEntry("10-net.conflist", []byte(bridgeList), entry)
	if err != nil || !changed {
		t.Fatalf("AddEntry: changed %v, %v", changed, err)
	}
	again, changed, err := AddEntry("10-net.conflist", out, entry)
	if err != nil || changed || string(again) != string(out) {
		t.Fatalf("second AddEntry changed the list (%v, %v)", changed, err)
	}
	// A changed entry is replaced in place, not appended.
	newer := entry
	newer.Timeout = "45s"
	upd, changed, err := AddEntry("10-net.conflist", out, newer)
	if err != nil || !changed || strings.Count(string(upd), `"skiff-cni"`) != 1 || !strings.Contains(string(upd), "45s") {
		t.Fatalf("updating the entry: %s %v %v", upd, changed, err)
	}
	back, found, err := RemoveEntry("10-net.conflist", upd)
	if err != nil || !found || HasEntry("10-net.conflist", back) {
		t.Fatalf("RemoveEntry: found %v, %v", found, err)
	}
	l, err := libcni.ConfListFromBytes(back)
	if err != nil || len(l.Plugins) != 2 {
		t.Fatalf("list after removal: %v", err)
	}
	if _, found, _ := RemoveEntry("10-net.conflist", back); found {
		t.Fatal("found an entry twice")
	}
}

func FuzzAddEntry(f *testing.F) {
	f.Add(bridgeConf, false)
	f.Add(bridgeList, true)
	f.Add(`{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"a"},{"type":"skiff-cni","old":1}]}`, true)
	f.Add(`{"cniVersion":"1.0.0","name":"n","type":"x","plugins":1}`, false)
	f.Fuzz(func(t *testing.T, data string, list bool) {
		file := "10-x.conf"
		if list {
			file = "10-x.conflist"
		}
		out, _, err := AddEntry(file, []byte(data), entry)
		if err != nil {
			return
		}
		if !HasEntry(ListName(file), out) {
			t.Fatalf("AddEntry output lacks the entry: %s", out)
		}
		if _, err := libcni.ConfListFromBytes(out); err != nil {
			t.Fatalf("AddEntry output does not load: %v", err)
		}
		back, found, err := RemoveEntry(ListName(file), out)
		if err != nil {
			// Only a list made of nothing but our entry cannot lose it.
			return
		}
		if !found || HasEntry(ListName(file), back) {
			t.Fatalf("RemoveEntry did not remove the entry from %s", out)
		}
	})
}
