package config

import (
	"os"
	"testing"
)

func TestConfigAndProfiles(t *testing.T) {
	t.Setenv("KT_HOME", t.TempDir())
	c, err := Load()
	if err != nil || len(c) != 0 {
		t.Fatalf("empty config: %v %v", c, err)
	}
	if err := c.Set("connect.dns-mode", "hosts"); err != nil {
		t.Fatal(err)
	}
	c.Set("global.image", "registry.example/kt/shadow:v1")
	if err := c.Set("nodot", "x"); err == nil {
		t.Error("a key without a group was accepted")
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	if err := SaveProfile("team-a", false); err != nil {
		t.Fatalf("save profile: %v", err)
	}
	if err := SaveProfile("team-a", false); err == nil {
		t.Error("overwrote a profile without --force")
	}
	if err := SaveProfile("../evil", false); err == nil {
		t.Error("accepted a profile name with a slash")
	}
	c.Unset("connect.dns-mode")
	c.Save()
	if err := LoadProfile("team-a"); err != nil {
		t.Fatal(err)
	}
	c, _ = Load()
	if v, _ := c.Get("connect.dns-mode"); v != "hosts" {
		t.Errorf("after load-profile: %v", c)
	}
	ps, _ := ListProfiles()
	if len(ps) != 1 || ps[0].Name != "team-a" {
		t.Errorf("profiles %v", ps)
	}
	if err := DropProfile("team-a"); err != nil {
		t.Fatal(err)
	}
	if err := LoadProfile("team-a"); err == nil {
		t.Error("loaded a dropped profile")
	}
	os.Remove(Path())
}
