package scenario

import "testing"

func TestLogFields(t *testing.T) {
	line := `time=2026-12-07T05:52:26.123Z level=INFO msg=drained app=hello pid=4242 version=v1 took=1.234s conns_at_start=10 migrated=9 err=<nil>`
	kv := logFields(line)
	want := map[string]string{"time": "2026-12-07T05:52:26.123Z", "msg": "drained", "app": "hello", "pid": "4242", "took": "1.234s", "migrated": "9", "err": "<nil>"}
	for k, v := range want {
		if kv[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, kv[k], v, kv)
		}
	}
	kv = logFields(`[gen 1 pid 7] time=2026-12-07T05:52:26.123Z level=INFO msg="handed over; draining" app=hello pid=7`)
	if kv["msg"] != "handed over; draining" || kv["pid"] != "7" || kv["time"] != "2026-12-07T05:52:26.123Z" {
		t.Errorf("quoted value: %v", kv)
	}
}
