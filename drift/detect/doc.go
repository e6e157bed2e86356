// Package detect finds drift without an API call: from the fields the
// agent last applied and the managedFields an informer shows now (Detect),
// with the rules that say what is never drift (Ignored), what to suggest
// when a field is fought over (IgnoreSuggestion), and the field-path
// helpers a correction and a restart need (RemovePath, NotOwned, Newer).
// It is pure: no clients, no state.
package detect
