package schema

import (
	"reflect"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "  \n-- only a comment\n", nil},
		{"two", "CREATE TABLE a (x int PRIMARY KEY);\nCREATE TABLE b (y int PRIMARY KEY);",
			[]string{"CREATE TABLE a (x int PRIMARY KEY)", "CREATE TABLE b (y int PRIMARY KEY)"}},
		{"no trailing semicolon", "SELECT 1", []string{"SELECT 1"}},
		{"semicolon in string", "INSERT INTO t (s) VALUES ('a;b');", []string{"INSERT INTO t (s) VALUES ('a;b')"}},
		{"doubled quote", "INSERT INTO t (s) VALUES ('it''s;');", []string{"INSERT INTO t (s) VALUES ('it''s;')"}},
		{"quoted identifier", `SELECT "we;ird" FROM t;`, []string{`SELECT "we;ird" FROM t`}},
		{"line comments", "SELECT a -- trailing; comment\nFROM t; // another; one\n",
			[]string{"SELECT a \nFROM t"}},
		{"block comment", "SELECT /* a; b */ c FROM t;", []string{"SELECT   c FROM t"}},
		{"dash inside string", "INSERT INTO t (s) VALUES ('--not a comment');",
			[]string{"INSERT INTO t (s) VALUES ('--not a comment')"}},
	}
	for _, tt := range tests {
		if got := splitStatements(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: splitStatements(%q) = %q; want %q", tt.name, tt.in, got, tt.want)
		}
	}
}
