// Renders a conversation with a Modelfile's TEMPLATE the way Ollama does, with Go's own
// text/template: the Modelfile's SYSTEM is put first when the conversation has no system
// message (ollama's server/routes.go), consecutive messages of one role are merged and the
// system messages joined into .System (template/template.go, collate), and the template
// runs over System, Messages and an empty Response.
//
// Usage: go run render.go MODELFILE CONVERSATION.json  (prints the prompt, nothing else)
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// quoted returns the """...""" argument of the Modelfile's first `name` instruction.
func quoted(modelfile, name string) (string, bool) {
	start := strings.Index(modelfile, "\n"+name+` """`)
	if start < 0 {
		return "", false
	}
	rest := modelfile[start+len(name)+5:]
	end := strings.Index(rest, `"""`)
	if end < 0 {
		fail("%s: no closing \"\"\"", name)
	}
	return rest[:end], true
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "render.go: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: go run render.go MODELFILE CONVERSATION.json")
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	modelfile := "\n" + string(raw)
	text, ok := quoted(modelfile, "TEMPLATE")
	if !ok {
		fail("%s has no TEMPLATE", os.Args[1])
	}
	system, hasSystem := quoted(modelfile, "SYSTEM")
	conv, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail("%v", err)
	}
	var msgs []message
	if err := json.Unmarshal(conv, &msgs); err != nil {
		fail("%s: %v", os.Args[2], err)
	}
	if hasSystem && system != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]message{{Role: "system", Content: system}}, msgs...)
	}
	var systems []string
	var collated []*message
	for i := range msgs {
		if msgs[i].Role == "system" {
			systems = append(systems, msgs[i].Content)
		}
		if n := len(collated); n > 0 && collated[n-1].Role == msgs[i].Role {
			collated[n-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	tmpl, err := template.New("").Option("missingkey=zero").Parse(text)
	if err != nil {
		fail("TEMPLATE does not parse: %v", err)
	}
	data := map[string]any{"System": strings.Join(systems, "\n\n"), "Messages": collated, "Response": ""}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fail("TEMPLATE failed: %v", err)
	}
}
