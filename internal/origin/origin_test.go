package origin

import "testing"

func TestValidate(t *testing.T) {
	for o, ok := range map[string]bool{
		"https://app.example.com":      true,
		"https://app.example.com/":     true,
		"http://localhost:5173":        true,
		"*":                            true,
		"app.example.com":              false,
		"https://*.example.com":        false,
		"https://app.example.com/path": false,
		"https://u@app.example.com":    false,
		"https://app.example.com?x=1":  false,
		"null":                         false,
		"":                             false,
	} {
		if err := Validate([]string{o}); (err == nil) != ok {
			t.Errorf("Validate(%q) = %v; want ok %v", o, err, ok)
		}
	}
}

func TestAllowed(t *testing.T) {
	list := []string{"https://app.example.com/", "http://localhost:5173"}
	for o, want := range map[string]bool{
		"https://app.example.com":     true,
		"HTTPS://APP.EXAMPLE.COM":     true,
		"http://localhost:5173":       true,
		"http://app.example.com":      false,
		"https://app.example.com:444": false,
		"https://evil.example.com":    false,
		"null":                        false,
		"":                            false,
	} {
		if got := Allowed(list, o); got != want {
			t.Errorf("Allowed(%q) = %v; want %v", o, got, want)
		}
	}
	if Allowed(nil, "https://app.example.com") {
		t.Error("an empty list allows an origin")
	}
	if !Allowed([]string{"*"}, "https://anything.example") || Allowed([]string{"*"}, "") {
		t.Error(`"*" must allow any origin, and still not an absent one`)
	}
}

func TestDescribe(t *testing.T) {
	if got := Describe(nil); got != "none: browsers are refused (set --allowed-origins)" {
		t.Errorf("Describe(nil) = %q", got)
	}
	if got := Describe([]string{"https://a.example", "*"}); got != "https://a.example,*" {
		t.Errorf("Describe = %q", got)
	}
}
