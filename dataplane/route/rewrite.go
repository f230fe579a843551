package route

import "strings"

// Rewrite applies a backend path override to a request path, as Azure Application Gateway does:
// the part of the path that the matched path rule covers is replaced by override, and the rest is
// appended. For Basic rules and path-map defaults (no path rule matched) the whole path is the rest;
// for an exact path rule nothing is left. An empty override leaves the path as it is.
func Rewrite(t *Target, path, override string) string {
	if override == "" {
		return path
	}
	rest := path
	switch {
	case t == nil || t.Path == "":
	case strings.HasSuffix(t.Path, "*"):
		rest = path[min(len(t.Path)-1, len(path)):]
	default:
		rest = ""
	}
	rest = strings.TrimPrefix(rest, "/")
	if rest == "" {
		return override
	}
	return strings.TrimSuffix(override, "/") + "/" + rest
}
