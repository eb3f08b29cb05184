package web

import (
	"fmt"
	"strings"
	"testing"
)

func line(inner string) string { return `<span class="line">` + inner + `</span>` }

func TestRenderLog(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"plain", "hello", line("hello")},
		{"red and reset", "\x1b[31mred\x1b[0m plain", line(`<span class="fg31">red</span> plain`)},
		{"bright", "\x1b[92mok\x1b[39m", line(`<span class="fg92">ok</span>`)},
		{"bold and colour", "\x1b[1;33mwarn\x1b[22m yellow\x1b[m", line(`<span class="fg33 bold">warn</span><span class="fg33"> yellow</span>`)},
		{"empty parameter resets", "\x1b[31mr\x1b[;mx", line(`<span class="fg31">r</span>x`)},
		{"background", "\x1b[41;97mX\x1b[0m", line(`<span class="fg97 bg41">X</span>`)},
		{"256 colours skipped", "\x1b[38;5;196;1mX\x1b[0m", line(`<span class="bold">X</span>`)},
		{"true colour skipped", "\x1b[38;2;1;2;3;4mX", line(`<span class="underline">X</span>`)},
		{"html escaped", `<script>alert("x&y")</script>`, line(`&lt;script&gt;alert(&#34;x&amp;y&#34;)&lt;/script&gt;`)},
		{"html in colour", "\x1b[31m<b>\x1b[0m", line(`<span class="fg31">&lt;b&gt;</span>`)},
		{"other CSI dropped", "a\x1b[2Kb\x1b[?25hc", line("abc")},
		{"OSC dropped", "\x1b]0;title\x07text\x1b]8;;http://x\x1b\\link", line("textlink")},
		{"control characters dropped", "a\bb\x00c\td", line("abc\td")},
		{"escape at the end", "x\x1b", line("x")},
		{"unfinished CSI", "x\x1b[31", line("x")},
		{"invalid UTF-8", "a\xffb é", line("a\uFFFDb é")},
		{"timestamp", "2026-01-02T03:04:05.123456789Z | hello", line(`<span class="ts">03:04:05.123 </span>hello`)},
		{"no timestamp", "2026 | hello", line("2026 | hello")},
		{"empty", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, _, _ := renderLog([]byte(c.in))
			if got != c.want {
				t.Errorf("renderLog(%q)\n got %s\nwant %s", c.in, got, c.want)
			}
		})
	}
}

func TestRenderLogCarriesState(t *testing.T) {
	in := "\x1b[1;31mfatal: {\n  \"msg\": \"x\"\n}\x1b[0m\nafter\n\x1b[32mpartial"
	got, n, st := renderLog([]byte(in))
	want := line(`<span class="fg31 bold">fatal: {</span>`) +
		line(`<span class="fg31 bold">  &#34;msg&#34;: &#34;x&#34;</span>`) +
		line(`<span class="fg31 bold">}</span>`) +
		line("after") +
		line(`<span class="fg32">partial</span>`)
	if got != want || n != 5 {
		t.Errorf("got %d lines\n%s\nwant\n%s", n, got, want)
	}
	if p := st.params(); p != "32" {
		t.Errorf("state at the end: %q, want 32", p)
	}
	_, _, st = renderLog([]byte("\x1b[1;4;94;103mx"))
	if p := st.params(); p != "1;4;94;103" {
		t.Errorf("params %q", p)
	}
}

// TestRenderLogColours: every foreground colour has its class and a
// style.
func TestRenderLogColours(t *testing.T) {
	css := string(mustStatic(t, "style.css"))
	for _, base := range []int{30, 90} {
		for i := range 8 {
			code := base + i
			got, _, _ := renderLog(fmt.Appendf(nil, "\x1b[%dmx", code))
			class := fmt.Sprintf("fg%d", code)
			if !strings.Contains(got, `class="`+class+`"`) {
				t.Errorf("code %d: %s", code, got)
			}
			if !strings.Contains(css, ".logtext ."+class+" {") {
				t.Errorf("style.css has no colour for .%s", class)
			}
		}
	}
}

func mustStatic(t *testing.T, name string) []byte {
	t.Helper()
	b, err := staticFS.ReadFile("static/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
