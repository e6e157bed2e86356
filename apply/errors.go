package apply

import (
	"errors"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IsConflict reports whether err is a server-side apply conflict.
func IsConflict(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status) && apierrors.IsConflict(err)
}

// ConflictManagers returns the field managers that an apply conflict names,
// sorted and without repeats, read from the status causes the API server
// attaches to it: one cause of type FieldManagerConflict per field, its
// field path in Field and the manager in Message (`conflict with
// "kubectl-edit" using apps/v1`, or `conflict with "kubectl" with
// subresource "scale" using apps/v1`). A conflict without such causes gives
// "unknown".
func ConflictManagers(err error) []string {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return []string{"unknown"}
	}
	seen := map[string]bool{}
	var out []string
	for _, c := range status.Status().Details.Causes {
		if c.Type != metav1.CauseTypeFieldManagerConflict {
			continue
		}
		if m := quoted(c.Message); m != "" && !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return []string{"unknown"}
	}
	sort.Strings(out)
	return out
}

// quoted returns the first double-quoted word of s.
func quoted(s string) string {
	i := strings.IndexByte(s, '"')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(s[i+1:], '"')
	if j <= 0 {
		return ""
	}
	return s[i+1 : i+1+j]
}
