package probe

import (
	"reflect"
	"testing"
)

func TestParseStatusRanges(t *testing.T) {
	tests := []struct {
		in      []string
		want    [][2]int
		wantErr string
	}{
		{in: nil, want: nil},
		{in: []string{"200-399"}, want: [][2]int{{200, 399}}},
		{in: []string{"200-299", "401"}, want: [][2]int{{200, 299}, {401, 401}}},
		{in: []string{" 100 - 599 ", "599"}, want: [][2]int{{100, 599}, {599, 599}}},
		{in: []string{"99"}, wantErr: `"99" is out of range 100-599`},
		{in: []string{"200", "600"}, wantErr: `"600" is out of range 100-599`},
		{in: []string{"300-200"}, wantErr: `"300-200" is out of range 100-599`},
		{in: []string{"200-600"}, wantErr: `"200-600" is out of range 100-599`},
		{in: []string{"abc"}, wantErr: `"abc" is not a status code or range like "200-399"`},
		{in: []string{"200-"}, wantErr: `"200-" is not a status code or range like "200-399"`},
		{in: []string{""}, wantErr: `"" is not a status code or range like "200-399"`},
		{in: []string{"2xx"}, wantErr: `"2xx" is not a status code or range like "200-399"`},
	}
	for _, tt := range tests {
		got, err := ParseStatusRanges(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseStatusRanges(%q) error %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseStatusRanges(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestMatchString(t *testing.T) {
	tests := []struct {
		status [][2]int
		want   string
	}{
		{nil, "200-399"},
		{[][2]int{{200, 399}}, "200-399"},
		{[][2]int{{200, 299}, {401, 401}}, "200-299,401"},
		{[][2]int{{200, 200}, {204, 204}, {300, 399}}, "200,204,300-399"},
	}
	for _, tt := range tests {
		if got := (Match{Status: tt.status}).String(); got != tt.want {
			t.Errorf("Match{%v}.String() = %q, want %q", tt.status, got, tt.want)
		}
	}
}

func TestMatchStatusOK(t *testing.T) {
	def := Match{}
	list := Match{Status: [][2]int{{200, 299}, {401, 401}}}
	tests := []struct {
		m    Match
		code int
		want bool
	}{
		{def, 199, false}, {def, 200, true}, {def, 302, true}, {def, 399, true}, {def, 400, false}, {def, 0, false},
		{list, 200, true}, {list, 299, true}, {list, 300, false}, {list, 401, true}, {list, 402, false},
	}
	for _, tt := range tests {
		if got := tt.m.StatusOK(tt.code); got != tt.want {
			t.Errorf("%v.StatusOK(%d) = %v", tt.m.Status, tt.code, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { list.StatusOK(500) }); n != 0 {
		t.Errorf("StatusOK allocates %v", n)
	}
}
