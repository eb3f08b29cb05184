package webhook_test

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/trigger/webhook"
)

// fuzzForges are the header layouts FuzzParse tries: the forge Parse is
// told, and the headers that carry the event and the signature.
var fuzzForges = []struct {
	forge      webhook.Forge
	event, sig string
	prefix     string // before the hex MAC
	token      bool   // the signature is the secret itself
}{
	{webhook.GitHub, "X-GitHub-Event", "X-Hub-Signature-256", "sha256=", false},
	{webhook.Gitea, "X-Gitea-Event", "X-Gitea-Signature", "", false},
	{webhook.Gitea, "X-Forgejo-Event", "X-Forgejo-Signature", "", false},
	{webhook.GitLab, "X-Gitlab-Event", "X-Gitlab-Token", "", true},
}

// FuzzParse checks that Parse never panics, never accepts a delivery
// without the right MAC or token (checked against an independent oracle),
// always accepts the signature of a correctly signed one, and only returns
// pushes that keep Push's contract. With sign set the fuzzer's signature is
// replaced by the right one, so that it explores past verification too.
func FuzzParse(f *testing.F) {
	for _, seed := range []struct {
		file  string
		forge uint8 // index in fuzzForges
		event string
	}{
		{"github-push.json", 0, "push"},
		{"github-push-deleted.json", 0, "push"},
		{"github-push-tag.json", 0, "push"},
		{"github-ping.json", 0, "ping"},
		{"gitea-push.json", 1, "push"},
		{"gitea-push.json", 2, "push"},
		{"gitlab-push.json", 3, "Push Hook"},
		{"gitlab-push-deleted.json", 3, "Push Hook"},
		{"gitlab-tag-push.json", 3, "Tag Push Hook"},
	} {
		body := fixture(f, seed.file)
		f.Add(seed.forge, secret, seed.event, "", "application/json", body, true)
		f.Add(seed.forge, secret, seed.event, "sha256="+mac(secret, body), "application/json", body, false)
	}
	f.Add(uint8(0), []byte{}, "push", "sha256="+mac(nil, []byte("{}")), "", []byte("{}"), false)
	f.Add(uint8(0), secret, "push", "", "application/x-www-form-urlencoded", []byte("payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D"), true)
	f.Add(uint8(2), secret, "push", "", "application/x-www-form-urlencoded; charset=utf-8", []byte("payload=%zz"), true)
	f.Add(uint8(3), secret, "Tag Push Hook", string(secret), "", []byte(`{"ref":"refs/tags/v1","before":"`+strings.Repeat("0", 40)+`","after":"`+strings.Repeat("a", 64)+`"}`), false)

	f.Fuzz(func(t *testing.T, forgeIndex uint8, key []byte, event, sig, contentType string, body []byte, sign bool) {
		ff := fuzzForges[int(forgeIndex)%len(fuzzForges)]
		right := ff.prefix + mac(key, body)
		if ff.token {
			right = string(key)
		}
		if sign {
			sig = right
		}
		h := http.Header{}
		h.Set(ff.event, event)
		h.Set(ff.sig, sig)
		h.Set("Content-Type", contentType)

		push, err := webhook.Parse(ff.forge, key, h, body)

		// Read, with the length known or not, agrees with Parse.
		for _, size := range []int64{int64(len(body)), -1} {
			rpush, rerr := webhook.Read(ff.forge, key, h, bytes.NewReader(body), size, 0)
			if kind(rerr) != kind(err) || !reflect.DeepEqual(rpush, push) {
				t.Fatalf("Read (size %d) = %+v, %v; Parse = %+v, %v", size, rpush, rerr, push, err)
			}
		}

		if len(key) == 0 {
			if !errors.Is(err, webhook.ErrEmptySecret) {
				t.Fatalf("empty secret: Parse = %+v, %v; want ErrEmptySecret", push, err)
			}
			return
		}
		if sign && (errors.Is(err, webhook.ErrBadSignature) || errors.Is(err, webhook.ErrEmptySecret)) {
			t.Fatalf("rightly signed: Parse = %v", err)
		}
		verified := err == nil || errors.Is(err, webhook.ErrNotPush) || errors.Is(err, webhook.ErrBadPayload)
		if verified && !oracleVerifies(ff.token, ff.prefix, key, body, sig) {
			t.Fatalf("Parse verified a wrong signature %q (err %v)", sig, err)
		}
		if err != nil {
			if push != nil {
				t.Fatalf("Parse returned a push with error %v", err)
			}
			return
		}
		if push.Forge != ff.forge {
			t.Errorf("Forge = %q, want %q", push.Forge, ff.forge)
		}
		if !strings.HasPrefix(push.Ref, "refs/") {
			t.Errorf("Ref %q is not a full ref", push.Ref)
		}
		wantBranch, _ := strings.CutPrefix(push.Ref, "refs/heads/")
		if !strings.HasPrefix(push.Ref, "refs/heads/") {
			wantBranch = ""
		}
		if push.Branch != wantBranch {
			t.Errorf("Ref %q gave Branch %q, want %q", push.Ref, push.Branch, wantBranch)
		}
		for _, hash := range []string{push.Before, push.After} {
			if _, err := hex.DecodeString(hash); err != nil || (len(hash) != 40 && len(hash) != 64) || strings.ToLower(hash) != hash {
				t.Errorf("%q is not a full commit hash", hash)
			}
		}
		if strings.Trim(push.After, "0") == "" && !push.Deleted {
			t.Errorf("After is zero but Deleted is not set")
		}
	})
}

// oracleVerifies is what a delivery must carry to be verified, written
// independently of the package.
func oracleVerifies(token bool, prefix string, key, body []byte, sig string) bool {
	if token {
		return sig == string(key)
	}
	hexMAC, ok := strings.CutPrefix(sig, prefix)
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexMAC)
	return err == nil && hmac.Equal(got, mustDecode(mac(key, body)))
}

func mustDecode(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// kind is the sentinel an error of the package wraps, for comparing two
// errors whose texts may differ.
func kind(err error) error {
	for _, k := range []error{webhook.ErrEmptySecret, webhook.ErrBadSignature, webhook.ErrPing, webhook.ErrNotPush, webhook.ErrBadPayload, webhook.ErrTooLarge, webhook.ErrUnknownForge} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}
