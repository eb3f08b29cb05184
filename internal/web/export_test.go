package web

// RenderLog is renderLog's HTML, for the browser tests (package web_test).
func RenderLog(data []byte) string {
	html, _, _ := renderLog(data)
	return html
}
