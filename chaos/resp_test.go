package chaos

import (
	"bufio"
	"context"
	"net"
	"slices"
	"testing"
)

// respCommand reads the replies the suite asks Redis and the Sentinels for: an array of bulk
// strings (SENTINEL get-master-addr-by-name), an array with a nested array (ROLE), an error.
func TestRESPCommand(t *testing.T) {
	replies := map[string]string{
		"SENTINEL": "*2\r\n$9\r\n127.0.0.1\r\n$5\r\n25379\r\n",
		"ROLE":     "*3\r\n$6\r\nmaster\r\n:3129\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$5\r\n25380\r\n$4\r\n3129\r\n",
		"NOPE":     "-ERR unknown command 'NOPE'\r\n",
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(c)
			_, _ = r.ReadString('\n') // *N
			_, _ = r.ReadString('\n') // $len
			name, _ := r.ReadString('\n')
			_, _ = c.Write([]byte(replies[name[:len(name)-2]]))
			_ = c.Close()
		}
	}()
	ctx := context.Background()
	if got, err := respCommand(ctx, l.Addr().String(), "SENTINEL", "get-master-addr-by-name", "parley"); err != nil || !slices.Equal(got, []string{"127.0.0.1", "25379"}) {
		t.Errorf("SENTINEL get-master-addr-by-name = %q, %v", got, err)
	}
	if got, err := respCommand(ctx, l.Addr().String(), "ROLE"); err != nil || !slices.Equal(got, []string{"master", "3129"}) {
		t.Errorf("ROLE = %q, %v; want master and its offset (the replicas skipped)", got, err)
	}
	if _, err := respCommand(ctx, l.Addr().String(), "NOPE"); err == nil || err.Error() != "ERR unknown command 'NOPE'" {
		t.Errorf("an error reply = %v", err)
	}
}
