package cluster

import "testing"

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://h1:6379":                "redis://h1:6379",
		"redis://:s3cret@h1:6379":        "redis://:xxxxx@h1:6379",
		"rediss://user:s3cret@h1:6379/2": "rediss://user:xxxxx@h1:6379/2",
		"redis://:s3#cret@h1:6379":       "redis://xxxxx@h1:6379",
		"redis://:s3 cret@h1:6379":       "redis://xxxxx@h1:6379",
		"redis://u:s3%zzcret@h1":         "redis://xxxxx@h1",
		"redis://:a@b@s3cret@h1":         "redis://:xxxxx@h1",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
