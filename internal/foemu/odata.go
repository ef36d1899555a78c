package foemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/plantgate/plantgate/internal/foemu/odata"
	"github.com/plantgate/plantgate/internal/logging"
)

// maxBodyBytes bounds OData and message service request bodies.
const maxBodyBytes = 64 << 20

// odataReq is one OData operation, from a plain request or a $batch part.
type odataReq struct {
	method  string
	path    string // below /data/, unescaped, e.g. Set(dataAreaId='usmf',Key='X')
	query   url.Values
	header  http.Header
	body    []byte
	client  *ClientConfig
	inBatch bool
	undo    *undoLog
}

// odataResp is the answer to an odataReq.
type odataResp struct {
	status int
	header http.Header
	body   []byte
	// entityPath is the canonical path of the entity the operation created
	// or addressed, for $<Content-ID> references in a changeset.
	entityPath string
}

func (r *odataResp) ok() bool { return r.status < 400 }

func errResp(status int, msg, typ, stack string) odataResp {
	h := http.Header{}
	h.Set("Content-Type", "application/json; odata.metadata=minimal")
	h.Set("OData-Version", "4.0")
	return odataResp{status: status, header: h, body: odataErrorBody(msg, typ, stack)}
}

// undoLog records changes of a changeset so they can be rolled back.
type undoLog struct {
	steps []func()
}

func (u *undoLog) add(f func()) {
	if u != nil {
		u.steps = append(u.steps, f)
	}
}

func (u *undoLog) rollback() {
	for i := len(u.steps) - 1; i >= 0; i-- {
		u.steps[i]()
	}
	u.steps = nil
}

// serveOData answers /data and /data/... (other than $batch and DMF).
func (e *Emulator) serveOData(w http.ResponseWriter, r *http.Request, cl *ClientConfig) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeODataError(w, http.StatusRequestEntityTooLarge, "The request body is too large.", typeOData, "")
		return
	}
	req := odataReq{
		method: r.Method,
		path:   strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/data"), "/"),
		query:  r.URL.Query(),
		header: r.Header,
		body:   body,
		client: cl,
	}
	e.mu.Lock()
	resp := e.execOData(req)
	e.mu.Unlock()
	for k, v := range resp.header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

// execOData runs one operation. The caller holds e.mu.
func (e *Emulator) execOData(req odataReq) odataResp {
	switch req.path {
	case "":
		if req.method != http.MethodGet {
			return errResp(http.StatusMethodNotAllowed, "The requested resource does not support http method '"+req.method+"'.", typeOData, "")
		}
		return e.serviceDocument()
	case "$metadata":
		if req.method != http.MethodGet {
			return errResp(http.StatusMethodNotAllowed, "The requested resource does not support http method '"+req.method+"'.", typeOData, "")
		}
		return odataResp{status: http.StatusOK, header: http.Header{"Content-Type": {"application/xml"}, "Odata-Version": {"4.0"}}, body: e.metadataXML()}
	}
	seg, err := odata.ParseSegment(req.path)
	if err != nil {
		return errResp(http.StatusBadRequest, "The request URI is not valid: "+strings.TrimPrefix(err.Error(), "syntax error: "), typeOData, "")
	}
	ent, ok := e.schema.Entity(seg.Set)
	if !ok {
		return errResp(http.StatusNotFound, fmt.Sprintf("Resource not found for the segment '%s'.", seg.Set), typeNotFound, "")
	}
	if seg.Rest != "" {
		if seg.Rest == "$count" && !seg.HasKey && req.method == http.MethodGet {
			return e.queryCollection(ent, req, true)
		}
		return errResp(http.StatusNotFound, fmt.Sprintf("Resource not found for the segment '%s'.", seg.Rest), typeNotFound, "")
	}
	if !seg.HasKey {
		switch req.method {
		case http.MethodGet:
			return e.queryCollection(ent, req, false)
		case http.MethodPost:
			return e.create(ent, req)
		}
		return errResp(http.StatusMethodNotAllowed, fmt.Sprintf("The requested resource does not support http method '%s'.", req.method), typeOData, "")
	}
	keyVals, msg := e.keyValues(ent, seg.Key)
	if msg != "" {
		return errResp(http.StatusBadRequest, msg, typeOData, "")
	}
	switch req.method {
	case http.MethodGet:
		return e.getEntity(ent, req, keyVals)
	case http.MethodPatch, "MERGE":
		return e.update(ent, req, keyVals, false)
	case http.MethodPut:
		return e.update(ent, req, keyVals, true)
	case http.MethodDelete:
		return e.deleteEntity(ent, req, keyVals)
	}
	return errResp(http.StatusMethodNotAllowed, fmt.Sprintf("The requested resource does not support http method '%s'.", req.method), typeOData, "")
}

// keyValues converts a key predicate to stored key values. All key fields
// must be given, as F&O requires.
func (e *Emulator) keyValues(ent *Entity, parts []odata.KeyPart) (map[string]any, string) {
	mismatch := fmt.Sprintf("The number of keys specified in the URI does not match number of key properties for the resource '%s'.", ent.qualifiedType())
	if len(parts) != len(ent.Keys) {
		return nil, mismatch
	}
	out := map[string]any{}
	for i, kp := range parts {
		name := kp.Name
		if name == "" {
			if len(ent.Keys) != 1 {
				return nil, mismatch
			}
			name = ent.Keys[0]
		}
		isKey := false
		for _, k := range ent.Keys {
			if k == name {
				isKey = true
			}
		}
		if !isKey {
			return nil, mismatch
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Sprintf("Duplicate key property '%s' in the key predicate.", name)
		}
		f := ent.byName[name]
		v, err := e.schema.keyValue(f, kp.Value)
		if err != nil {
			return nil, err.Error()
		}
		if f.Name == dataAreaID {
			v = strings.ToLower(v.(string))
		}
		out[name] = v
		_ = i
	}
	return out, ""
}

// entityPath renders Set(key=value,...) for a record.
func entityPath(ent *Entity, rec map[string]any) string {
	parts := make([]string, len(ent.Keys))
	for i, k := range ent.Keys {
		parts[i] = k + "=" + keyLiteral(ent.byName[k], rec[k])
	}
	return ent.Set + "(" + strings.Join(parts, ",") + ")"
}

func (e *Emulator) crossCompany(q url.Values) bool {
	return strings.EqualFold(q.Get("cross-company"), "true")
}

// clientCompany returns the default company (lower case) of a client.
func (e *Emulator) clientCompany(cl *ClientConfig) string {
	if cl != nil && cl.DefaultCompany != "" {
		return strings.ToLower(cl.DefaultCompany)
	}
	return e.store.defaultCo
}

// visible reports whether a record is visible to the client without
// cross-company=true.
func (e *Emulator) visible(ent *Entity, rec map[string]any, cl *ClientConfig, cross bool) bool {
	if cross || !ent.company {
		return true
	}
	return rec[dataAreaID] == e.clientCompany(cl)
}

var supportedOptions = map[string]bool{
	"$filter": true, "$select": true, "$top": true, "$skip": true, "$count": true, "$orderby": true, "$format": true, "$skiptoken": true,
}

// queryCollection answers GET Set and GET Set/$count.
func (e *Emulator) queryCollection(ent *Entity, req odataReq, countOnly bool) odataResp {
	q := req.query
	for k := range q {
		if strings.HasPrefix(k, "$") && !supportedOptions[k] {
			if k == "$expand" {
				return errResp(http.StatusBadRequest, "The emulator's entities have no navigation properties; $expand is not supported.", typeOData, "")
			}
			return errResp(http.StatusBadRequest, fmt.Sprintf("The query parameter '%s' is not supported.", k), typeOData, "")
		}
	}
	if f := q.Get("$format"); f != "" && !strings.EqualFold(f, "json") && !strings.HasPrefix(strings.ToLower(f), "application/json") {
		return errResp(http.StatusNotAcceptable, "The requested format is not supported; use JSON.", typeOData, "")
	}
	lookup := func(name string) (odata.PropertyType, bool) {
		f, ok := ent.byName[name]
		if !ok {
			return odata.PropertyType{}, false
		}
		return e.schema.propertyType(f), true
	}
	var flt *odata.Filter
	if s := q.Get("$filter"); s != "" {
		var err error
		flt, err = odata.ParseFilter(s)
		if err == nil {
			err = flt.Bind(ent.qualifiedType(), lookup)
		}
		if err != nil {
			return errResp(http.StatusBadRequest, "The query specified in the URI is not valid. "+filterMessage(err), typeOData, "")
		}
	}
	var sel map[string]bool
	var selList []string
	if s := q.Get("$select"); s != "" && s != "*" {
		sel = map[string]bool{}
		for _, n := range strings.Split(s, ",") {
			n = strings.TrimSpace(n)
			if _, ok := ent.byName[n]; !ok {
				return errResp(http.StatusBadRequest, fmt.Sprintf("The query specified in the URI is not valid. Could not find a property named '%s' on type '%s'.", n, ent.qualifiedType()), typeOData, "")
			}
			if !sel[n] {
				sel[n] = true
				selList = append(selList, n)
			}
		}
	}
	intOpt := func(name string) (int, bool, string) {
		s := q.Get(name)
		if s == "" {
			return 0, false, ""
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return 0, false, fmt.Sprintf("Invalid value '%s' for %s query option found. The %s query option requires a non-negative integer value.", s, name, name)
		}
		return n, true, ""
	}
	top, hasTop, msg := intOpt("$top")
	if msg != "" {
		return errResp(http.StatusBadRequest, msg, typeOData, "")
	}
	skip, _, msg := intOpt("$skip")
	if msg != "" {
		return errResp(http.StatusBadRequest, msg, typeOData, "")
	}
	if s := q.Get("$skiptoken"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errResp(http.StatusBadRequest, "The $skiptoken is not valid.", typeOData, "")
		}
		skip += n
	}
	count := strings.EqualFold(q.Get("$count"), "true")
	if c := q.Get("$count"); c != "" && !count && !strings.EqualFold(c, "false") {
		return errResp(http.StatusBadRequest, fmt.Sprintf("'%s' is not a valid count option.", c), typeOData, "")
	}
	var orderBy []orderTerm
	if s := q.Get("$orderby"); s != "" {
		var msg string
		if orderBy, msg = parseOrderBy(ent, s); msg != "" {
			return errResp(http.StatusBadRequest, "The query specified in the URI is not valid. "+msg, typeOData, "")
		}
	}
	cross := e.crossCompany(q)
	var matched []*row
	for _, r := range e.store.rows(ent) {
		if !e.visible(ent, r.vals, req.client, cross) {
			continue
		}
		if flt != nil && !flt.Match(func(name string) odata.Value { return e.schema.value(ent.byName[name], r.vals[name]) }) {
			continue
		}
		matched = append(matched, r)
	}
	if countOnly {
		return odataResp{status: http.StatusOK, header: http.Header{"Content-Type": {"text/plain"}, "Odata-Version": {"4.0"}}, body: []byte(strconv.Itoa(len(matched)))}
	}
	if len(orderBy) > 0 {
		sort.SliceStable(matched, func(i, j int) bool {
			for _, t := range orderBy {
				c := compareValues(matched[i].vals[t.field], matched[j].vals[t.field])
				if t.desc {
					c = -c
				}
				if c != 0 {
					return c < 0
				}
			}
			return false
		})
	}
	total := len(matched)
	page := matched
	if skip >= len(page) {
		page = nil
	} else {
		page = page[skip:]
	}
	if hasTop && top < len(page) {
		page = page[:top]
	}
	pageSize := e.cfg.OData.PageSize
	if n := maxPageSize(req.header.Get("Prefer")); n > 0 && n < pageSize {
		pageSize = n
	}
	var next string
	if len(page) > pageSize {
		page = page[:pageSize]
		nq := url.Values{}
		for k, v := range q {
			if k != "$skip" && k != "$top" && k != "$skiptoken" {
				nq[k] = v
			}
		}
		nq.Set("$skip", strconv.Itoa(skip+pageSize))
		if hasTop {
			nq.Set("$top", strconv.Itoa(top-pageSize))
		}
		next = e.baseURL + "/data/" + ent.Set + "?" + nq.Encode()
	}
	var b strings.Builder
	b.WriteString(`{"@odata.context":`)
	ctx := e.baseURL + "/data/$metadata#" + ent.Set
	if selList != nil {
		ctx += "(" + strings.Join(selList, ",") + ")"
	}
	writeJSONString(&b, ctx)
	if count {
		b.WriteString(`,"@odata.count":` + strconv.Itoa(total))
	}
	b.WriteString(`,"value":[`)
	for i, r := range page {
		if i > 0 {
			b.WriteByte(',')
		}
		encodeEntity(&b, ent, r, sel, true)
	}
	b.WriteByte(']')
	if next != "" {
		b.WriteString(`,"@odata.nextLink":`)
		writeJSONString(&b, next)
	}
	b.WriteByte('}')
	return odataResp{status: http.StatusOK, header: jsonHeader(), body: []byte(b.String())}
}

func jsonHeader() http.Header {
	return http.Header{"Content-Type": {"application/json; odata.metadata=minimal"}, "Odata-Version": {"4.0"}}
}

// maxPageSize reads odata.maxpagesize from a Prefer header.
func maxPageSize(prefer string) int {
	for _, p := range strings.Split(prefer, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "odata.maxpagesize") {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

func preferMinimal(h http.Header) bool {
	return strings.Contains(strings.ToLower(h.Get("Prefer")), "return=minimal")
}

func preferRepresentation(h http.Header) bool {
	return strings.Contains(strings.ToLower(h.Get("Prefer")), "return=representation")
}

type orderTerm struct {
	field string
	desc  bool
}

// parseOrderBy parses $orderby; a non-empty message reports an error.
func parseOrderBy(ent *Entity, s string) ([]orderTerm, string) {
	var out []orderTerm
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		if len(f) == 0 || len(f) > 2 {
			return nil, fmt.Sprintf("Invalid $orderby clause '%s'.", part)
		}
		if _, ok := ent.byName[f[0]]; !ok {
			return nil, fmt.Sprintf("Could not find a property named '%s' on type '%s'.", f[0], ent.qualifiedType())
		}
		t := orderTerm{field: f[0]}
		if len(f) == 2 {
			switch strings.ToLower(f[1]) {
			case "asc":
			case "desc":
				t.desc = true
			default:
				return nil, fmt.Sprintf("Invalid $orderby direction '%s'.", f[1])
			}
		}
		out = append(out, t)
	}
	return out, ""
}

// filterMessage strips the sentinel prefix from a filter error.
func filterMessage(err error) string {
	msg := err.Error()
	for _, s := range []error{odata.ErrSyntax, odata.ErrUnsupported, odata.ErrType, odata.ErrUnknownProperty} {
		if errors.Is(err, s) {
			return strings.TrimPrefix(msg, s.Error()+": ")
		}
	}
	return msg
}

// entityResponse renders a single entity with its context.
func (e *Emulator) entityResponse(ent *Entity, r *row, status int) odataResp {
	var b strings.Builder
	b.WriteString(`{"@odata.context":`)
	writeJSONString(&b, e.baseURL+"/data/$metadata#"+ent.Set+"/$entity")
	b.WriteByte(',')
	var inner strings.Builder
	encodeEntity(&inner, ent, r, nil, true)
	b.WriteString(strings.TrimPrefix(inner.String(), "{"))
	h := jsonHeader()
	h.Set("ETag", etag(r))
	return odataResp{status: status, header: h, body: []byte(b.String()), entityPath: entityPath(ent, r.vals)}
}

func (e *Emulator) notFound(ent *Entity) odataResp {
	return errResp(http.StatusNotFound, fmt.Sprintf("No resource was found for the key values given for '%s'. Use cross-company=true to address another company.", ent.Set), typeOData, "")
}

func (e *Emulator) getEntity(ent *Entity, req odataReq, keyVals map[string]any) odataResp {
	r := e.store.get(ent, keyVals)
	if r == nil || !e.visible(ent, r.vals, req.client, e.crossCompany(req.query)) {
		return e.notFound(ent)
	}
	return e.entityResponse(ent, r, http.StatusOK)
}

// decodeBody parses a JSON object body, answering F&O's error for malformed
// JSON.
func decodeBody(body []byte) (map[string]any, *odataResp) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var in map[string]any
	if err := dec.Decode(&in); err != nil || in == nil {
		msg := "The request body is empty; a JSON object was expected."
		if err != nil && len(bytes.TrimSpace(body)) > 0 {
			msg = "Invalid JSON. " + jsonErrorText(err)
		}
		r := errResp(http.StatusBadRequest, msg, typeOData, "")
		return nil, &r
	}
	if dec.More() {
		r := errResp(http.StatusBadRequest, "Invalid JSON. More than one value was found at the root of the JSON content. JSON content can only have one value at the root level, which is an array, an object or a primitive value.", typeOData, "")
		return nil, &r
	}
	return in, nil
}

func jsonErrorText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at offset %d.", se.Error(), se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("A JSON object was expected at the root, found %s.", te.Value)
	}
	return err.Error() + "."
}

// writeFailed renders a failed write in F&O's shape.
func (e *Emulator) writeFailed(ent *Entity, req odataReq, lines []string, stack string) odataResp {
	status := e.cfg.OData.WriteErrorStatus
	if req.inBatch {
		status = e.cfg.OData.BatchWriteErrorStatus
	}
	msg := fmt.Sprintf("Write failed for table row of type '%s'. Infolog: %s", ent.Target, strings.Join(lines, "; "))
	e.log.Debug().Str(logging.FieldEntity, ent.Set).Str(logging.FieldReason, msg).Msg("odata write failed")
	return errResp(status, msg, typeWrite, stack)
}

func (e *Emulator) create(ent *Entity, req odataReq) odataResp {
	in, bad := decodeBody(req.body)
	if bad != nil {
		return *bad
	}
	vals, err := e.store.convertInput(ent, in)
	if err != nil {
		return errResp(http.StatusBadRequest, err.Error(), typeOData, "")
	}
	rec, lines := e.store.prepareCreate(ent, vals, e.clientCompany(req.client))
	if lines != nil {
		return e.writeFailed(ent, req, lines, stackCreate)
	}
	r := e.store.insert(ent, rec)
	key := e.store.key(ent, rec)
	req.undo.add(func() { delete(e.store.tables[ent.Set].rows, key); e.store.tables[ent.Set].sorted = nil })
	resp := e.entityResponse(ent, r, http.StatusCreated)
	loc := e.baseURL + "/data/" + entityPath(ent, rec)
	resp.header.Set("Location", loc)
	resp.header.Set("OData-EntityId", loc)
	if preferMinimal(req.header) {
		resp.status, resp.body = http.StatusNoContent, nil
		resp.header.Del("Content-Type")
		resp.header.Set("Preference-Applied", "return=minimal")
	}
	return resp
}

func (e *Emulator) matchETag(req odataReq, r *row) bool {
	im := strings.TrimSpace(req.header.Get("If-Match"))
	return im == "" || im == "*" || im == etag(r)
}

func (e *Emulator) update(ent *Entity, req odataReq, keyVals map[string]any, replace bool) odataResp {
	r := e.store.get(ent, keyVals)
	if r == nil || !e.visible(ent, r.vals, req.client, e.crossCompany(req.query)) {
		return e.notFound(ent)
	}
	if !e.matchETag(req, r) {
		return errResp(http.StatusPreconditionFailed, "The ETag value in the If-Match header does not match the current ETag of the entity.", typeOData, "")
	}
	in, bad := decodeBody(req.body)
	if bad != nil {
		return *bad
	}
	vals, err := e.store.convertInput(ent, in)
	if err != nil {
		return errResp(http.StatusBadRequest, err.Error(), typeOData, "")
	}
	for _, k := range ent.Keys {
		if v, ok := vals[k]; ok && normKey(v) != normKey(r.vals[k]) {
			return e.writeFailed(ent, req, []string{fmt.Sprintf("Error: The key field '%s' cannot be changed.", k)}, stackUpdate)
		}
	}
	rec := copyRecord(r.vals)
	if replace {
		for _, f := range ent.all {
			if !isKey(ent, f.Name) {
				rec[f.Name] = e.schema.zero(f)
			}
		}
	}
	for k, v := range vals {
		if !isKey(ent, k) {
			rec[k] = v
		}
	}
	if lines := e.store.validate(ent, rec); lines != nil {
		return e.writeFailed(ent, req, lines, stackUpdate)
	}
	old, oldVersion := r.vals, r.version
	e.store.replace(ent, r, rec)
	req.undo.add(func() { r.vals, r.version = old, oldVersion; e.store.tables[ent.Set].sorted = nil })
	if preferRepresentation(req.header) {
		resp := e.entityResponse(ent, r, http.StatusOK)
		resp.header.Set("Preference-Applied", "return=representation")
		return resp
	}
	h := http.Header{"Odata-Version": {"4.0"}}
	h.Set("ETag", etag(r))
	return odataResp{status: http.StatusNoContent, header: h, entityPath: entityPath(ent, r.vals)}
}

func isKey(ent *Entity, name string) bool {
	for _, k := range ent.Keys {
		if k == name {
			return true
		}
	}
	return false
}

func (e *Emulator) deleteEntity(ent *Entity, req odataReq, keyVals map[string]any) odataResp {
	r := e.store.get(ent, keyVals)
	if r == nil || !e.visible(ent, r.vals, req.client, e.crossCompany(req.query)) {
		return e.notFound(ent)
	}
	if !e.matchETag(req, r) {
		return errResp(http.StatusPreconditionFailed, "The ETag value in the If-Match header does not match the current ETag of the entity.", typeOData, "")
	}
	e.store.delete(ent, r)
	key := e.store.key(ent, r.vals)
	req.undo.add(func() { e.store.tables[ent.Set].rows[key] = r; e.store.tables[ent.Set].sorted = nil })
	return odataResp{status: http.StatusNoContent, header: http.Header{"Odata-Version": {"4.0"}}}
}

// serviceDocument lists the entity sets.
func (e *Emulator) serviceDocument() odataResp {
	type item struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
		URL  string `json:"url"`
	}
	items := []item{}
	for _, s := range e.schema.sets() {
		items = append(items, item{s, "EntitySet", s})
	}
	b, _ := json.Marshal(map[string]any{"@odata.context": e.baseURL + "/data/$metadata", "value": items}) // plain values always marshal
	return odataResp{status: http.StatusOK, header: jsonHeader(), body: b}
}

// metadataXML renders a CSDL document for the schema.
func (e *Emulator) metadataXML() []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>` + "\n")
	b.WriteString(`<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices>`)
	b.WriteString(`<Schema Namespace="Microsoft.Dynamics.DataEntities" xmlns="http://docs.oasis-open.org/odata/ns/edm">`)
	enums := make([]string, 0, len(e.schema.Enums))
	for n := range e.schema.Enums {
		enums = append(enums, n)
	}
	sort.Strings(enums)
	for _, n := range enums {
		b.WriteString(`<EnumType Name="` + xmlAttr(n) + `">`)
		for i, m := range e.schema.Enums[n] {
			fmt.Fprintf(&b, `<Member Name="%s" Value="%d"/>`, xmlAttr(m), i)
		}
		b.WriteString(`</EnumType>`)
	}
	for _, ent := range e.schema.Entities {
		b.WriteString(`<EntityType Name="` + xmlAttr(ent.Type) + `"><Key>`)
		for _, k := range ent.Keys {
			b.WriteString(`<PropertyRef Name="` + xmlAttr(k) + `"/>`)
		}
		b.WriteString(`</Key>`)
		for _, f := range ent.all {
			typ := map[FieldType]string{TypeString: "Edm.String", TypeInt: "Edm.Int64", TypeDecimal: "Edm.Decimal", TypeDate: "Edm.DateTimeOffset", TypeDateTime: "Edm.DateTimeOffset", TypeBool: "Edm.Boolean"}[f.Type]
			if f.Type == TypeEnum {
				typ = "Microsoft.Dynamics.DataEntities." + f.Enum
			}
			nullable := "true"
			if isKey(ent, f.Name) {
				nullable = "false"
			}
			extra := ""
			if f.Type == TypeString && f.Max > 0 {
				extra = fmt.Sprintf(` MaxLength="%d"`, f.Max)
			}
			if f.Type == TypeDecimal {
				extra = ` Precision="32" Scale="6"`
			}
			fmt.Fprintf(&b, `<Property Name="%s" Type="%s" Nullable="%s"%s/>`, xmlAttr(f.Name), typ, nullable, extra)
		}
		b.WriteString(`</EntityType>`)
	}
	b.WriteString(`<EntityContainer Name="Resources">`)
	for _, ent := range e.schema.Entities {
		b.WriteString(`<EntitySet Name="` + xmlAttr(ent.Set) + `" EntityType="Microsoft.Dynamics.DataEntities.` + xmlAttr(ent.Type) + `"/>`)
	}
	b.WriteString(`</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>`)
	return []byte(b.String())
}

func xmlAttr(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	return r.Replace(s)
}
