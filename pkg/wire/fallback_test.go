package wire

import (
	"strings"
	"testing"
)

func TestParseFallback(t *testing.T) {
	fb, err := ParseFallback("8080=10.96.0.7:8080,9000=[fd00::1]:80")
	if err != nil || len(fb) != 2 || fb[8080] != "10.96.0.7:8080" || fb[9000] != "[fd00::1]:80" {
		t.Fatalf("got %v, %v", fb, err)
	}
	if got := FormatFallback(fb); got != "8080=10.96.0.7:8080,9000=[fd00::1]:80" {
		t.Errorf("FormatFallback = %q", got)
	}
	if fb, err := ParseFallback(""); err != nil || len(fb) != 0 {
		t.Errorf("empty: %v, %v", fb, err)
	}
	for _, bad := range []string{
		"8080", "0=10.0.0.1:80", "70000=10.0.0.1:80", "x=10.0.0.1:80",
		"80=web:80", "80=10.0.0.1", "80=10.0.0.1:0", "80=10.0.0.1:99999",
		"80=10.0.0.1:80,80=10.0.0.2:80", "80=10.0.0.1:80,",
		strings.Repeat("1=10.0.0.1:1,", MaxFallbacks) + "2=10.0.0.1:1",
	} {
		if fb, err := ParseFallback(bad); err == nil {
			t.Errorf("ParseFallback(%q) = %v, want an error", bad, fb)
		}
	}
}

func FuzzParseFallback(f *testing.F) {
	f.Add("8080=10.96.0.7:8080")
	f.Fuzz(func(t *testing.T, s string) {
		fb, err := ParseFallback(s)
		if err != nil {
			return
		}
		again, err := ParseFallback(FormatFallback(fb))
		if err != nil || len(again) != len(fb) {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}
