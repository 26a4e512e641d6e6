package staff

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/elimity-com/scim"
	scimerr "github.com/elimity-com/scim/errors"
	"github.com/elimity-com/scim/filter"
	"github.com/elimity-com/scim/schema"
	fp "github.com/scim2/filter-parser/v2"
)

// The SCIM library validates PATCH operations against the schemas; this file
// applies them (RFC 7644 §3.5.2) to the stored attributes in memory. The caller
// saves the result in the same transaction it loaded it in, so one failing
// operation leaves the resource as it was.

var noTarget = func(what string) error {
	return invalid(scimerr.ScimTypeNoTarget, what)
}

// applyUserOp applies one validated operation to a user's attributes.
func applyUserOp(attrs map[string]any, op scim.PatchOperation) error {
	if op.Path == nil {
		// No path: the value is a set of attribute paths (or extension
		// containers) to apply one by one.
		vals, ok := op.Value.(map[string]any)
		if !ok {
			return invalid(scimerr.ScimTypeInvalidValue, "an operation without a path needs an object value")
		}
		for k, v := range vals {
			if ext := extensionSchema(k); ext != nil {
				sub, ok := v.(map[string]any)
				if !ok {
					return invalid(scimerr.ScimTypeInvalidValue, k+" must be an object")
				}
				for sk, sv := range sub {
					p, err := fp.ParsePath([]byte(k + ":" + sk))
					if err != nil {
						return invalid(scimerr.ScimTypeInvalidPath, err.Error())
					}
					if err := applyUserPath(attrs, op.Op, &p, sv); err != nil {
						return err
					}
				}
				continue
			}
			p, err := fp.ParsePath([]byte(k))
			if err != nil {
				return invalid(scimerr.ScimTypeInvalidPath, err.Error())
			}
			if err := applyUserPath(attrs, op.Op, &p, v); err != nil {
				return err
			}
		}
		return nil
	}
	return applyUserPath(attrs, op.Op, op.Path, op.Value)
}

func extensionSchema(id string) *schema.Schema {
	for i := range userExtensions {
		if strings.EqualFold(userExtensions[i].ID, id) {
			return &userExtensions[i]
		}
	}
	return nil
}

func applyUserPath(attrs map[string]any, op string, path *fp.Path, value any) error {
	sch := userSchema
	container := attrs
	if uri := path.AttributePath.URI(); uri != "" && !strings.EqualFold(uri, userSchema.ID) {
		ext := extensionSchema(uri)
		if ext == nil {
			return invalid(scimerr.ScimTypeInvalidPath, "unknown schema "+uri)
		}
		sch = *ext
		c, ok := attrs[ext.ID].(map[string]any)
		if !ok {
			if op == scim.PatchOperationRemove {
				return nil
			}
			c = map[string]any{}
			attrs[ext.ID] = c
		}
		container = c
	}
	def, ok := sch.Attributes.ContainsAttribute(path.AttributePath.AttributeName)
	if !ok {
		return noTarget("no attribute " + path.AttributePath.AttributeName)
	}
	switch def.Name() {
	case "groups":
		return &scimerr.ScimError{ScimType: scimerr.ScimTypeMutability, Detail: "groups is read-only: change group membership through /Groups", Status: 400}
	case "password":
		return nil // never stored
	}
	key := canonicalKey(container, def.Name())
	sub := path.AttributePath.SubAttributeName()
	if path.ValueExpression != nil {
		return applyFiltered(container, key, def, op, path.ValueExpression, path.SubAttributeName(), value)
	}
	if sub != "" {
		sub = canonicalSub(def, sub)
		if def.MultiValued() {
			list, _ := container[key].([]any)
			for _, e := range list {
				if m, ok := e.(map[string]any); ok {
					setSub(m, op, sub, value)
				}
			}
			return nil
		}
		m, ok := container[key].(map[string]any)
		if !ok {
			if op == scim.PatchOperationRemove {
				return nil
			}
			m = map[string]any{}
			container[key] = m
		}
		setSub(m, op, sub, value)
		return nil
	}
	switch op {
	case scim.PatchOperationRemove:
		if def.MultiValued() && value != nil {
			container[key] = without(asList(container[key]), asList(value))
			if len(asList(container[key])) == 0 {
				delete(container, key)
			}
			return nil
		}
		delete(container, key)
	case scim.PatchOperationReplace:
		container[key] = value
	case scim.PatchOperationAdd:
		switch {
		case def.MultiValued():
			cur := asList(container[key])
			for _, v := range asList(value) {
				if !containsValue(cur, v) {
					cur = append(cur, v)
				}
			}
			container[key] = cur
		case def.AttributeType() == "complex":
			m, _ := container[key].(map[string]any)
			if m == nil {
				m = map[string]any{}
			}
			if vm, ok := value.(map[string]any); ok {
				for k, v := range vm {
					m[k] = v
				}
			}
			container[key] = m
		default:
			container[key] = value
		}
	default:
		return invalid(scimerr.ScimTypeInvalidValue, "unknown op "+op)
	}
	return nil
}

// applyFiltered applies op to the elements of a multi-valued attribute that
// match expr, e.g. emails[type eq "work"].value.
func applyFiltered(container map[string]any, key string, def schema.CoreAttribute, op string, expr fp.Expression, sub string, value any) error {
	if !def.MultiValued() {
		return invalid(scimerr.ScimTypeInvalidPath, key+" is not multi-valued")
	}
	if sub != "" {
		sub = canonicalSub(def, sub)
	}
	v := filter.NewFilterValidator(expr, schema.Schema{Attributes: filter.MultiValuedFilterAttributes(def)})
	list := asList(container[key])
	var kept []any
	matched := 0
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			m = map[string]any{"value": e}
		}
		if !matchSafe(v, m) {
			kept = append(kept, e)
			continue
		}
		matched++
		switch {
		case op == scim.PatchOperationRemove && sub == "":
			continue // drop the element
		case sub != "":
			setSub(m, op, sub, value)
		case op == scim.PatchOperationReplace || op == scim.PatchOperationAdd:
			if vm, ok := value.(map[string]any); ok {
				for k, x := range vm {
					m[k] = x
				}
			}
		}
		kept = append(kept, m)
	}
	if matched == 0 && op != scim.PatchOperationRemove {
		// Entra replaces emails[type eq "work"].value on a user that has no
		// work e-mail yet: create the element the filter describes.
		ae, ok := expr.(*fp.AttributeExpression)
		if !ok || ae.Operator != fp.EQ || ae.AttributePath.SubAttribute != nil {
			return noTarget("no value matches the filter")
		}
		m := map[string]any{canonicalSub(def, ae.AttributePath.AttributeName): ae.CompareValue}
		if sub != "" {
			m[sub] = value
		} else if vm, ok := value.(map[string]any); ok {
			for k, x := range vm {
				m[k] = x
			}
		}
		kept = append(kept, m)
	}
	if len(kept) == 0 {
		delete(container, key)
	} else {
		container[key] = kept
	}
	return nil
}

func matchSafe(v filter.Validator, m map[string]any) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return v.PassesFilter(m) == nil
}

func setSub(m map[string]any, op, sub string, value any) {
	for k := range m {
		if strings.EqualFold(k, sub) && k != sub {
			delete(m, k)
		}
	}
	if op == scim.PatchOperationRemove {
		delete(m, sub)
		return
	}
	m[sub] = value
}

// canonicalKey returns name, removing any differently-cased copy of it from m
// (after moving its value to name).
func canonicalKey(m map[string]any, name string) string {
	for k, v := range m {
		if strings.EqualFold(k, name) && k != name {
			if _, ok := m[name]; !ok {
				m[name] = v
			}
			delete(m, k)
		}
	}
	return name
}

func canonicalSub(def schema.CoreAttribute, sub string) string {
	if a, ok := def.SubAttributes().ContainsAttribute(sub); ok {
		return a.Name()
	}
	return sub
}

func asList(v any) []any {
	switch v := v.(type) {
	case nil:
		return nil
	case []any:
		return v
	default:
		return []any{v}
	}
}

func sameValue(a, b any) bool {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		if av, ok := am["value"]; ok {
			return fmt.Sprint(av) == fmt.Sprint(bm["value"])
		}
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func containsValue(list []any, v any) bool {
	for _, e := range list {
		if sameValue(e, v) {
			return true
		}
	}
	return false
}

func without(list, remove []any) []any {
	var out []any
	for _, e := range list {
		if !containsValue(remove, e) {
			out = append(out, e)
		}
	}
	return out
}

// applyGroupOp applies one validated operation to a group in memory.
func applyGroupOp(g *groupState, op scim.PatchOperation) error {
	if op.Path == nil {
		vals, ok := op.Value.(map[string]any)
		if !ok {
			return invalid(scimerr.ScimTypeInvalidValue, "an operation without a path needs an object value")
		}
		for k, v := range vals {
			p, err := fp.ParsePath([]byte(k))
			if err != nil {
				return invalid(scimerr.ScimTypeInvalidPath, err.Error())
			}
			if err := applyGroupPath(g, op.Op, &p, v); err != nil {
				return err
			}
		}
		return nil
	}
	return applyGroupPath(g, op.Op, op.Path, op.Value)
}

func applyGroupPath(g *groupState, op string, path *fp.Path, value any) error {
	name := path.AttributePath.AttributeName
	switch {
	case strings.EqualFold(name, "displayName"):
		if op == scim.PatchOperationRemove {
			return invalid(scimerr.ScimTypeInvalidValue, "displayName is required")
		}
		s, ok := value.(string)
		if !ok {
			return invalid(scimerr.ScimTypeInvalidValue, "displayName must be a string")
		}
		g.name = s
	case strings.EqualFold(name, "externalId"):
		s, _ := value.(string)
		if op == scim.PatchOperationRemove {
			s = ""
		}
		g.externalID = s
	case strings.EqualFold(name, "members"):
		return applyMembers(g, op, path, value)
	default:
		return noTarget("no group attribute " + name)
	}
	return nil
}

func applyMembers(g *groupState, op string, path *fp.Path, value any) error {
	if path.ValueExpression != nil {
		// members[value eq "id"] (Okta's remove).
		if op != scim.PatchOperationRemove {
			return invalid(scimerr.ScimTypeInvalidPath, "only remove may filter members")
		}
		def, _ := groupSchema.Attributes.ContainsAttribute("members")
		v := filter.NewFilterValidator(path.ValueExpression, schema.Schema{Attributes: filter.MultiValuedFilterAttributes(def)})
		var kept []string
		for _, id := range g.members {
			if !matchSafe(v, map[string]any{"value": id, "display": g.displays[id], "type": "User"}) {
				kept = append(kept, id)
			}
		}
		g.members = kept
		return nil
	}
	ids, err := memberIDs(value)
	if err != nil {
		return err
	}
	switch op {
	case scim.PatchOperationReplace:
		g.members = ids
	case scim.PatchOperationAdd:
		for _, id := range ids {
			if !containsString(g.members, id) {
				g.members = append(g.members, id)
			}
		}
	case scim.PatchOperationRemove:
		if value == nil {
			g.members = nil
			return nil
		}
		var kept []string
		for _, id := range g.members {
			if !containsString(ids, id) {
				kept = append(kept, id)
			}
		}
		g.members = kept
	default:
		return invalid(scimerr.ScimTypeInvalidValue, "unknown op "+op)
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
