package foemu

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/foemu/dmfpkg"
	"github.com/plantgate/plantgate/internal/logging"
)

// DMF execution states (DMFExecutionSummaryStatus), exactly as F&O names
// them.
const (
	StatusUnknown            = "Unknown"
	StatusNotRun             = "NotRun"
	StatusExecuting          = "Executing"
	StatusSucceeded          = "Succeeded"
	StatusPartiallySucceeded = "PartiallySucceeded"
	StatusFailed             = "Failed"
	StatusCanceled           = "Canceled"
)

// dmfActionPrefix is the bound action namespace.
const dmfActionPrefix = "Microsoft.Dynamics.DataEntities."

// errorContainer holds the error files the emulator generates.
const errorContainer = "dmf-errors"

// Execution is a DMF import job started by ImportFromPackage.
type Execution struct {
	ID              string `json:"execution_id"`     // executionId, given or generated
	DefinitionGroup string `json:"definition_group"` // definitionGroupId (data project name)
	// PackageURL is the package URL with its SAS signature redacted.
	PackageURL  string            `json:"package_url"`
	LegalEntity string            `json:"legal_entity"`          // company the rows are imported into
	Execute     bool              `json:"execute"`               // execute parameter: run staging to target
	Overwrite   bool              `json:"overwrite"`             // overwrite parameter (recorded only)
	Status      string            `json:"status"`                // DMFExecutionSummaryStatus value
	ClientID    string            `json:"client_id"`             // application that submitted it
	SubmittedAt time.Time         `json:"submitted_at"`          // ImportFromPackage time
	StartedAt   *time.Time        `json:"started_at,omitempty"`  // when it became Executing
	FinishedAt  *time.Time        `json:"finished_at,omitempty"` // when it reached a final status
	Entities    []EntityExecution `json:"entities"`              // one per manifest entity, in execution order
	// Submissions counts ImportFromPackage calls with this executionId.
	Submissions int `json:"submissions"`
	// ParallelWith is the execution that was still NotRun or Executing
	// when this one was submitted (dmf.parallel_imports: fail). Such an
	// execution is accepted, then ends Failed without importing anything.
	ParallelWith string `json:"parallel_with,omitempty"`
	// InjectedFaults lists the DMF faults applied to the execution:
	// fail_next_imports, partial_next_imports, hang_executing.
	InjectedFaults []string `json:"injected_faults,omitempty"`

	pkg       *dmfpkg.Package
	keysAsked map[string]time.Time // entity label (lower) -> GenerateImportTargetErrorKeysFile time
	files     map[string]string    // generated error file blob names by kind|entity
	gen       int64
}

// EntityExecution is the outcome of one entity of an execution.
type EntityExecution struct {
	// EntityName is the DMF label from the manifest; EntitySet the entity
	// it resolved to.
	EntityName   string `json:"entity_name"`
	EntitySet    string `json:"entity_set"`    // the entity set the label resolved to
	SourceFormat string `json:"source_format"` // SourceFormat of the manifest
	InputFile    string `json:"input_file"`    // InputFilePath of the manifest
	// Status is a per-entity state: NotRun, Executing, Finished or Error.
	Status            string `json:"status"`
	StagingRecords    int    `json:"staging_records"`     // rows loaded to staging
	StagingErrorCount int    `json:"staging_error_count"` // rows that failed source to staging
	TargetRecords     int    `json:"target_records"`      // rows inserted into the entity
	TargetErrorCount  int    `json:"target_error_count"`  // rows that failed staging to target
	// Message is an entity-level failure (bad file, bad mapping).
	Message string     `json:"message,omitempty"`
	Errors  []RowError `json:"errors,omitempty"` // per-row errors in row order

	entity     *Entity
	plan       dmfpkg.Entity
	injectLine int // a row that fails at target by the fault dmf.partial_next_imports (0: none)
	header     []string
	staged     []stagedRow
	failed     []failedRow
	targets    []failedRow
}

// RowError is a row that failed to import.
type RowError struct {
	// Row is the line (CSV) or row number (EXCEL) in the data file.
	Row int `json:"row"`
	// Stage is staging (the value did not convert) or target (validation
	// or a duplicate key).
	Stage   string `json:"stage"`
	Message string `json:"message"` // F&O-style error text
}

type stagedRow struct {
	line   int
	vals   map[string]any
	source []string
}

type failedRow struct {
	line   int
	source []string
	msg    string
	vals   map[string]any
}

// dmfResult writes an action result: {"@odata.context": ..., "value": v}.
func (e *Emulator) dmfResult(w http.ResponseWriter, edm string, v any) {
	b, err := json.Marshal(map[string]any{"@odata.context": e.baseURL + "/data/$metadata#" + edm, "value": v})
	if err != nil {
		writeODataError(w, http.StatusInternalServerError, err.Error(), typeServer, "")
		return
	}
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func dmfError(w http.ResponseWriter, msg string) {
	writeODataError(w, http.StatusBadRequest, msg, typeXpp, "")
}

// actionParams describes the parameters of a DMF action.
type actionParams map[string]string // name -> "string" | "bool" | "int"

var dmfActions = map[string]actionParams{
	"GetAzureWriteUrl":                  {"uniqueFileName": "string"},
	"ImportFromPackage":                 {"packageUrl": "string", "definitionGroupId": "string", "executionId": "string", "execute": "bool", "overwrite": "bool", "legalEntityId": "string"},
	"ImportFromPackageAsync":            {"packageUrl": "string", "definitionGroupId": "string", "executionId": "string", "execute": "bool", "overwrite": "bool", "legalEntityId": "string"},
	"GetExecutionSummaryStatus":         {"executionId": "string"},
	"GetExecutionErrors":                {"executionId": "string"},
	"GetExecutionSummaryPageUrl":        {"executionId": "string"},
	"GenerateImportTargetErrorKeysFile": {"executionId": "string", "entityName": "string"},
	"GetImportTargetErrorKeysFileUrl":   {"executionId": "string", "entityName": "string"},
	"GetImportStagingErrorFileUrl":      {"executionId": "string", "entityName": "string"},
	"DeleteExecutionHistoryJob":         {"executionId": "string"},
}

// serveDMF answers the bound actions of DataManagementDefinitionGroups.
// DMF calls are exempt from throttling, as in F&O.
func (e *Emulator) serveDMF(w http.ResponseWriter, r *http.Request, cl *ClientConfig) {
	seg := strings.TrimPrefix(r.URL.Path, "/data/DataManagementDefinitionGroups/")
	action, ok := strings.CutPrefix(seg, dmfActionPrefix)
	spec, known := dmfActions[action]
	if !ok || !known {
		msg := fmt.Sprintf("Resource not found for the segment '%s'.", seg)
		if ok {
			msg += " The emulator implements " + strings.Join(sortedKeys(dmfActions), ", ") + "."
		}
		writeODataError(w, http.StatusNotFound, msg, typeNotFound, "")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeODataError(w, http.StatusMethodNotAllowed, "The requested resource does not support http method '"+r.Method+"'.", typeOData, "")
		return
	}
	body, err := readAllLimited(w, r, maxBodyBytes)
	if err != nil {
		writeODataError(w, http.StatusRequestEntityTooLarge, "The request body is too large.", typeOData, "")
		return
	}
	in, bad := decodeBody(body)
	if bad != nil {
		writeODataError(w, bad.status, string(bad.body), typeOData, "")
		return
	}
	params, msg := checkParams(action, spec, in)
	if msg != "" {
		writeODataError(w, http.StatusBadRequest, msg, typeOData, "")
		return
	}
	switch action {
	case "GetAzureWriteUrl":
		e.getAzureWriteURL(w, params)
	case "ImportFromPackage", "ImportFromPackageAsync":
		e.importFromPackage(w, r.Context(), cl, params)
	case "GetExecutionSummaryStatus":
		if ex := e.lookupExecution(w, params.str("executionId"), true); ex != nil {
			status := ex.Status
			if s := e.faults.dmfSummaryStatus(); s != "" {
				status = s // injected: a value outside DMFExecutionSummaryStatus
			}
			e.dmfResult(w, "Edm.String", status)
		}
	case "GetExecutionErrors":
		e.getExecutionErrors(w, params.str("executionId"))
	case "GetExecutionSummaryPageUrl":
		if ex := e.lookupExecution(w, params.str("executionId"), true); ex != nil {
			e.dmfResult(w, "Edm.String", e.baseURL+"/_emulator/executions/"+url.PathEscape(ex.ID))
		}
	case "GenerateImportTargetErrorKeysFile", "GetImportTargetErrorKeysFileUrl", "GetImportStagingErrorFileUrl":
		e.errorFileAction(w, r.Context(), action, params.str("executionId"), params.str("entityName"))
	case "DeleteExecutionHistoryJob":
		e.mu.Lock()
		_, found := e.executions[params.str("executionId")]
		delete(e.executions, params.str("executionId"))
		e.mu.Unlock()
		e.dmfResult(w, "Edm.Boolean", found)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type params map[string]any

func (p params) str(k string) string { s, _ := p[k].(string); return s }
func (p params) flag(k string) bool  { b, _ := p[k].(bool); return b }

// checkParams validates action parameters as the OData layer does: unknown
// parameters and wrong types are errors; missing ones are null.
func checkParams(action string, spec actionParams, in map[string]any) (params, string) {
	for k, v := range in {
		typ, ok := spec[k]
		if !ok {
			return nil, fmt.Sprintf("The parameter '%s' in the request payload is not a valid parameter for the operation '%s'.", k, action)
		}
		switch typ {
		case "string":
			if _, ok := v.(string); !ok && v != nil {
				return nil, fmt.Sprintf("Cannot convert the literal '%v' to the expected type 'Edm.String'.", v)
			}
		case "bool":
			if _, ok := v.(bool); !ok && v != nil {
				return nil, fmt.Sprintf("Cannot convert the literal '%v' to the expected type 'Edm.Boolean'.", v)
			}
		}
	}
	return params(in), ""
}

// getAzureWriteURL returns the SAS URL to upload a package to. As in F&O,
// value is a JSON document serialized into a string.
func (e *Emulator) getAzureWriteURL(w http.ResponseWriter, p params) {
	name := strings.TrimSpace(p.str("uniqueFileName"))
	if name == "" {
		dmfError(w, "The parameter uniqueFileName must not be empty.")
		return
	}
	if strings.ContainsAny(name, "\\?#") || strings.HasPrefix(name, "/") || strings.Contains(name, "..") || len(name) > 1024 {
		dmfError(w, fmt.Sprintf("The file name '%s' is not a valid blob name.", name))
		return
	}
	u, err := e.blobs.signedURL(e.cfg.DMF.Blob.Container, name, "rcw", time.Now().Add(e.cfg.DMF.SASLifetime.D()))
	if err != nil {
		e.log.Error().Err(err).Msg("sign package upload URL")
		writeODataError(w, http.StatusInternalServerError, "The blob storage is not available: "+err.Error(), typeXpp, "")
		return
	}
	inner, _ := json.Marshal(map[string]string{"BlobId": "{" + strings.ToUpper(randomGUID()) + "}", "BlobUrl": u}) // strings always marshal
	e.log.Debug().Str(logging.FieldBlob, name).Str(logging.FieldURL, logging.RedactURL(u)).Msg("package upload URL issued")
	e.dmfResult(w, "Edm.String", string(inner))
}

// lookupExecution finds an execution or answers F&O's 400. With
// transient set it also answers 400 during the window right after submit,
// before F&O's batch job creates the execution record.
func (e *Emulator) lookupExecution(w http.ResponseWriter, id string, transient bool) *Execution {
	e.mu.Lock()
	ex := e.executions[id]
	var cp Execution
	if ex != nil {
		cp = *ex
	}
	e.mu.Unlock()
	if ex == nil || (transient && e.notCreatedYet(&cp)) {
		dmfNotFound(w, id)
		return nil
	}
	return &cp
}

// notCreatedYet reports whether ex is in the window right after submit in
// which F&O's batch job has not yet created the execution record.
func (e *Emulator) notCreatedYet(ex *Execution) bool {
	return time.Since(ex.SubmittedAt) < e.cfg.DMF.NotFoundWindow.D()
}

func dmfNotFound(w http.ResponseWriter, id string) {
	dmfError(w, fmt.Sprintf("Execution ID(s) '%s' were not found.", id))
}

// importFromPackage downloads and checks the package (manifest, header,
// entity names) and queues the execution, returning its ID. The data files
// are read and imported asynchronously.
func (e *Emulator) importFromPackage(w http.ResponseWriter, ctx context.Context, cl *ClientConfig, p params) {
	pkgURL := strings.TrimSpace(p.str("packageUrl"))
	group := strings.TrimSpace(p.str("definitionGroupId"))
	id := strings.TrimSpace(p.str("executionId"))
	if pkgURL == "" {
		dmfError(w, "The package URL must not be empty.")
		return
	}
	if group == "" {
		dmfError(w, "The definition group (data project) name must not be empty.")
		return
	}
	legal := strings.TrimSpace(p.str("legalEntityId"))
	if legal == "" {
		e.mu.Lock()
		legal = e.clientCompany(cl)
		e.mu.Unlock()
	}
	if !e.companyExists(legal) {
		dmfError(w, fmt.Sprintf("Company '%s' does not exist.", legal))
		return
	}
	if id != "" {
		e.mu.Lock()
		old := e.executions[id]
		if old != nil {
			old.Submissions++
		}
		e.mu.Unlock()
		if old != nil {
			switch e.cfg.DMF.ReusedExecutionID {
			case "reject":
				dmfError(w, fmt.Sprintf("Execution ID '%s' already exists. Use a new execution ID for each import.", id))
				return
			case "idempotent":
				e.log.Info().Str(logging.FieldExecutionID, id).Str(logging.FieldClientID, cl.ClientID).Msg("dmf executionId reused; the existing execution is returned and nothing is imported again")
				e.dmfResult(w, "Edm.String", id)
				return
			}
			e.log.Info().Str(logging.FieldExecutionID, id).Msg("dmf executionId reused; importing the package again")
		}
	}
	data, err := e.fetchPackage(ctx, pkgURL)
	if err != nil {
		dmfError(w, err.Error())
		return
	}
	pkg, err := dmfpkg.Read(data, dmfpkg.Options{MaxFileBytes: e.cfg.DMF.MaxPackageBytes})
	if err != nil {
		dmfError(w, "The data package is not valid: "+err.Error())
		return
	}
	if pkg.Header.ManifestType != dmfpkg.ManifestType {
		dmfError(w, fmt.Sprintf("The data package is not valid: PackageHeader.xml has ManifestType '%s'; expected '%s'.", pkg.Header.ManifestType, dmfpkg.ManifestType))
		return
	}
	if len(pkg.Manifest.Entities) == 0 {
		dmfError(w, "The data package manifest lists no entities (PackageEntityList is empty).")
		return
	}
	ex := &Execution{
		ID: id, DefinitionGroup: group, PackageURL: logging.RedactURL(pkgURL), LegalEntity: strings.ToUpper(legal),
		Execute: p.flag("execute"), Overwrite: p.flag("overwrite"), Status: StatusNotRun, ClientID: cl.ClientID,
		SubmittedAt: time.Now().UTC(), Submissions: 1, pkg: pkg, keysAsked: map[string]time.Time{}, files: map[string]string{},
	}
	for _, pe := range pkg.Manifest.Entities {
		ent, ok := e.schema.entityByLabel(pe.EntityName, pe.TargetEntity)
		if !ok {
			dmfError(w, fmt.Sprintf("Entity %s does not exist in the target environment.", pe.EntityName))
			return
		}
		ex.Entities = append(ex.Entities, EntityExecution{
			EntityName: pe.EntityName, EntitySet: ent.Set, SourceFormat: pe.SourceFormat, InputFile: pe.InputFilePath,
			Status: StatusNotRun, entity: ent, plan: pe,
		})
	}
	sort.SliceStable(ex.Entities, func(i, j int) bool {
		a, b := ex.Entities[i].plan, ex.Entities[j].plan
		if a.ExecutionUnit != b.ExecutionUnit {
			return a.ExecutionUnit < b.ExecutionUnit
		}
		if a.LevelInExecution != b.LevelInExecution {
			return a.LevelInExecution < b.LevelInExecution
		}
		return a.SequenceInLevel < b.SequenceInLevel
	})
	e.mu.Lock()
	if ex.ID == "" {
		ex.ID = fmt.Sprintf("%s-%s-%s", group, time.Now().UTC().Format("2006-01-02_15-04-05"), strings.ToUpper(randomGUID()))
	}
	if old := e.executions[ex.ID]; old != nil {
		ex.Submissions = old.Submissions
	} else {
		e.execOrder = append(e.execOrder, ex.ID)
	}
	if e.cfg.DMF.ParallelImports == ParallelFail {
		ex.ParallelWith = e.runningExecution(ex.ID)
	}
	ex.gen = e.gen
	e.executions[ex.ID] = ex
	e.mu.Unlock()
	if ex.ParallelWith != "" {
		e.log.Warn().Str(logging.FieldExecutionID, ex.ID).Str(logging.FieldClientID, cl.ClientID).
			Str(logging.FieldReason, "execution "+ex.ParallelWith+" is still running").
			Msg("dmf ImportFromPackage called in parallel; the execution will fail (dmf.parallel_imports: fail)")
	} else if inj := e.faults.takeDMFOutcome(); inj != "" {
		e.mu.Lock()
		ex.InjectedFaults = append(ex.InjectedFaults, inj)
		e.mu.Unlock()
	}
	e.log.Info().Str(logging.FieldExecutionID, ex.ID).Str(logging.FieldClientID, cl.ClientID).Int(logging.FieldCount, len(ex.Entities)).Msg("dmf import queued")
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.runExecution(e.ctx, ex)
	}()
	e.dmfResult(w, "Edm.String", ex.ID)
}

// runningExecution returns the ID of the oldest execution other than id
// that is still NotRun or Executing, or "". The caller holds e.mu.
func (e *Emulator) runningExecution(id string) string {
	for _, oid := range e.execOrder {
		o := e.executions[oid]
		if o != nil && oid != id && (o.Status == StatusNotRun || o.Status == StatusExecuting) {
			return oid
		}
	}
	return ""
}

// runExecution moves an execution through NotRun, Executing and a final
// status. Records are inserted when the final status is set.
func (e *Emulator) runExecution(ctx context.Context, ex *Execution) {
	if !waitFor(ctx, e.cfg.DMF.QueuedTime.D()) {
		return
	}
	started := time.Now().UTC()
	hang, hangFor := e.faults.dmfHang()
	var parallelWith string
	var injected []string
	if !e.updateExecution(ex, func() {
		ex.Status, ex.StartedAt = StatusExecuting, &started
		for i := range ex.Entities {
			ex.Entities[i].Status = StatusExecuting
		}
		if hang {
			ex.InjectedFaults = append(ex.InjectedFaults, injectedHang)
		}
		parallelWith, injected = ex.ParallelWith, append([]string(nil), ex.InjectedFaults...)
	}) {
		return
	}
	execTime := e.cfg.DMF.ExecutionTime.D()
	if hang {
		e.log.Warn().Str(logging.FieldExecutionID, ex.ID).Str(logging.FieldDuration, durationOrForever(hangFor)).Msg("dmf execution hangs in Executing (injected fault)")
		if hangFor == 0 {
			<-ctx.Done() // a hung batch job: Executing until shutdown (or Reset drops it)
			return
		}
		execTime = hangFor
	}
	results := make([]stageResult, len(ex.Entities))
	if parallelWith == "" {
		for i := range ex.Entities {
			results[i] = e.stageEntity(ex.pkg, ex.Entities[i].plan, ex.Entities[i].entity)
		}
	}
	if !waitFor(ctx, execTime) {
		return
	}
	e.updateExecution(ex, func() {
		if parallelWith != "" {
			e.failParallel(ex)
			return
		}
		for i, r := range results {
			ee := &ex.Entities[i]
			ee.Message, ee.header, ee.staged, ee.failed = r.message, r.header, r.staged, r.failed
			switch {
			case slices.Contains(injected, injectedFail) && ee.Message == "":
				ee.Message = "The import was canceled: an error occurred in the batch task. (Injected by the fo-emulator fault dmf.fail_next_imports.)"
			case slices.Contains(injected, injectedPartial) && len(ee.staged) > 0:
				ee.injectLine = ee.staged[len(ee.staged)-1].line
			}
		}
		e.finishExecution(ex)
		if slices.Contains(injected, injectedPartial) {
			ex.Status = StatusPartiallySucceeded
		}
	})
}

func durationOrForever(d time.Duration) string {
	if d == 0 {
		return "forever"
	}
	return d.String()
}

// stagingTable names an entity's DMF staging table as F&O does: the
// target entity name with Entity replaced by Staging.
func stagingTable(ent *Entity) string {
	return strings.TrimSuffix(ent.Target, "Entity") + "Staging"
}

// failParallel ends an execution that was submitted while another one was
// running, the way simultaneous imports were reported to fail on F&O: a
// duplicate key when the batch task writes its staging records. Nothing
// is imported. The caller holds e.mu.
func (e *Emulator) failParallel(ex *Execution) {
	for i := range ex.Entities {
		ee := &ex.Entities[i]
		ee.Status = "Error"
		ee.Message = fmt.Sprintf("Cannot create a record in %s staging (%s). Definition group: %s, Execution ID: %s. The record already exists. "+
			"(fo-emulator: ImportFromPackage was called while execution %s was still running; F&O's ImportFromPackage must not be called from parallel threads. "+
			"Submit imports one after the other, or set dmf.parallel_imports: allow.)",
			ee.EntityName, stagingTable(ee.entity), ex.DefinitionGroup, ex.ID, ex.ParallelWith)
	}
	ex.Status = StatusFailed
	now := time.Now().UTC()
	ex.FinishedAt = &now
	e.log.Info().Str(logging.FieldExecutionID, ex.ID).Str(logging.FieldStatus, ex.Status).Str(logging.FieldReason, "parallel with "+ex.ParallelWith).Msg("dmf import finished")
}

// stageResult is the outcome of reading one entity's data file.
type stageResult struct {
	message string // entity-level failure
	header  []string
	staged  []stagedRow
	failed  []failedRow
}

// waitFor waits d or until ctx ends; it reports whether d elapsed.
func waitFor(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// updateExecution runs f under the lock if ex is still the current
// execution for its ID.
func (e *Emulator) updateExecution(ex *Execution, f func()) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.executions[ex.ID] != ex || ex.gen != e.gen {
		return false
	}
	f()
	return true
}

// stageEntity reads an entity's data file and converts its rows (the
// source-to-staging step). It reads only immutable inputs, so it runs
// without the lock.
func (e *Emulator) stageEntity(pkg *dmfpkg.Package, pe dmfpkg.Entity, ent *Entity) (res stageResult) {
	if !pe.HasEntityMapList || len(pe.EntityMapList) == 0 {
		if e.cfg.DMF.MissingEntityMap == "succeed_empty" {
			return res
		}
		res.message = fmt.Sprintf("The entity %s has no field mapping: EntityMapList is missing or empty in Manifest.xml. (F&O has been seen to report success with 0 records here; set dmf.missing_entity_map: succeed_empty to rehearse that.)", pe.EntityName)
		return res
	}
	data, err := pkg.File(pe.InputFilePath)
	if err != nil {
		res.message = fmt.Sprintf("The file '%s' named by InputFilePath of entity %s was not found in the data package.", pe.InputFilePath, pe.EntityName)
		if !errors.Is(err, dmfpkg.ErrMissingFile) {
			res.message = fmt.Sprintf("The file '%s' could not be read: %v", pe.InputFilePath, err)
		}
		return res
	}
	tab, err := dmfpkg.ReadTable(pe, data)
	switch {
	case errors.Is(err, dmfpkg.ErrNotUnicode):
		res.message = "Selected file is not Unicode. (CSV-Unicode data files must be UTF-16 LE with a byte order mark.)"
		return res
	case errors.Is(err, dmfpkg.ErrLineEnding):
		res.message = fmt.Sprintf("The mapping is incorrect for entity %s and field {%s}. (The CSV-Unicode file has %s; lines must end with CRLF.)",
			pe.EntityName, strings.ToUpper(randomGUID()), strings.TrimPrefix(err.Error(), dmfpkg.ErrLineEnding.Error()+": "))
		return res
	case errors.Is(err, dmfpkg.ErrUnsupportedFormat):
		res.message = fmt.Sprintf("The source data format '%s' is not supported by the fo-emulator; it reads CSV-Unicode and EXCEL.", pe.SourceFormat)
		return res
	case err != nil:
		res.message = fmt.Sprintf("The file '%s' could not be read as %s: %v", pe.InputFilePath, pe.SourceFormat, err)
		return res
	}
	res.header = tab.Header
	col := map[string]int{}
	for i, h := range tab.Header {
		if _, dup := col[strings.ToUpper(h)]; !dup {
			col[strings.ToUpper(h)] = i
		}
	}
	type mapping struct {
		col   int
		field *Field
	}
	var maps []mapping
	seen := map[string]bool{}
	for _, m := range pe.EntityMapList {
		f, ok := ent.byStaging[strings.ToUpper(m.EntityField)]
		if !ok {
			res.message = fmt.Sprintf("The field %s in the mapping of entity %s does not exist on the entity (staging fields: %s).", m.EntityField, pe.EntityName, strings.Join(stagingNames(ent), ", "))
			return res
		}
		if seen[f.Name] {
			res.message = fmt.Sprintf("The field %s is mapped twice for entity %s.", m.EntityField, pe.EntityName)
			return res
		}
		seen[f.Name] = true
		c, ok := col[strings.ToUpper(m.XMLField)]
		if !ok {
			res.message = fmt.Sprintf("The column %s of the mapping of entity %s was not found in the header of %s (columns: %s).", m.XMLField, pe.EntityName, pe.InputFilePath, strings.Join(tab.Header, ", "))
			return res
		}
		if f.Name == dataAreaID {
			continue // the legal entity of the execution decides the company
		}
		maps = append(maps, mapping{col: c, field: f})
	}
	excel := tab.Format == dmfpkg.FormatExcel
	for _, row := range tab.Rows {
		vals := map[string]any{}
		var problems []string
		for _, m := range maps {
			cell := ""
			if m.col < len(row.Values) {
				cell = row.Values[m.col]
			}
			v, err := e.schema.fromText(m.field, cell, excel)
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			vals[m.field.Name] = v
		}
		if len(problems) > 0 {
			res.failed = append(res.failed, failedRow{line: row.Line, source: row.Values, msg: strings.Join(problems, "; ")})
			continue
		}
		res.staged = append(res.staged, stagedRow{line: row.Line, vals: vals, source: row.Values})
	}
	return res
}

func stagingNames(ent *Entity) []string {
	out := make([]string, 0, len(ent.all))
	for _, f := range ent.all {
		out = append(out, f.StagingName())
	}
	return out
}

// finishExecution validates and inserts the staged rows (staging to
// target) and sets the final status. The caller holds e.mu.
func (e *Emulator) finishExecution(ex *Execution) {
	ok, failed := 0, 0
	for i := range ex.Entities {
		ee := &ex.Entities[i]
		ee.StagingRecords = len(ee.staged)
		ee.StagingErrorCount = len(ee.failed)
		for _, f := range ee.failed {
			ee.Errors = append(ee.Errors, RowError{Row: f.line, Stage: "staging", Message: f.msg})
		}
		if ee.Message != "" {
			ee.Status = "Error"
			failed++
			continue
		}
		// Rows that leave a number-sequence field (the journal number) empty
		// share one number per entity and execution: one journal per import.
		shared := map[string]string{}
		for _, s := range ee.staged {
			for _, f := range ee.entity.all {
				if f.NumberSequence == "" {
					continue
				}
				if v, _ := s.vals[f.Name].(string); v != "" {
					continue
				}
				if shared[f.Name] == "" {
					shared[f.Name] = e.store.nextNumber(ee.entity, strings.ToLower(ex.LegalEntity), f)
				}
				s.vals[f.Name] = shared[f.Name]
			}
			rec, lines := e.store.prepareCreate(ee.entity, s.vals, strings.ToLower(ex.LegalEntity))
			if ee.injectLine != 0 && s.line == ee.injectLine {
				rec, lines = nil, []string{"Error: Update has been canceled. (Injected by the fo-emulator fault dmf.partial_next_imports.)"}
			}
			if lines != nil {
				msg := fmt.Sprintf("Write failed for table row of type '%s'. Infolog: %s", ee.entity.Target, strings.Join(lines, "; "))
				ee.targets = append(ee.targets, failedRow{line: s.line, source: s.source, msg: msg, vals: s.vals})
				ee.Errors = append(ee.Errors, RowError{Row: s.line, Stage: "target", Message: msg})
				continue
			}
			if ex.Execute {
				e.store.insert(ee.entity, rec)
				ee.TargetRecords++
			}
		}
		ee.TargetErrorCount = len(ee.targets)
		sort.SliceStable(ee.Errors, func(a, b int) bool { return ee.Errors[a].Row < ee.Errors[b].Row })
		rows := len(ee.staged) + len(ee.failed)
		switch {
		case ee.StagingErrorCount+ee.TargetErrorCount == 0:
			ee.Status = "Finished"
			ok++
		case rows > 0 && ee.StagingErrorCount+ee.TargetErrorCount >= rows:
			ee.Status = "Error"
			failed++
		default:
			ee.Status = "Error"
		}
	}
	switch {
	case ok == len(ex.Entities):
		ex.Status = StatusSucceeded
	case failed == len(ex.Entities):
		ex.Status = StatusFailed
	default:
		ex.Status = StatusPartiallySucceeded
	}
	now := time.Now().UTC()
	ex.FinishedAt = &now
	ev := e.log.Info().Str(logging.FieldExecutionID, ex.ID).Str(logging.FieldStatus, ex.Status)
	total := 0
	for _, ee := range ex.Entities {
		total += ee.TargetRecords
	}
	ev.Int(logging.FieldRecords, total).Msg("dmf import finished")
}

// executionErrors lists the error messages of an execution.
func executionErrors(ex *Execution) []string {
	out := []string{}
	for _, ee := range ex.Entities {
		if ee.Message != "" {
			out = append(out, fmt.Sprintf("%s: %s", ee.EntityName, ee.Message))
		}
		for _, re := range ee.Errors {
			out = append(out, fmt.Sprintf("%s, row %d (%s): %s", ee.EntityName, re.Row, re.Stage, re.Message))
		}
	}
	return out
}

// getExecutionErrors returns the errors as a JSON list serialized into the
// string value.
func (e *Emulator) getExecutionErrors(w http.ResponseWriter, id string) {
	e.mu.Lock()
	ex := e.executions[id]
	found := ex != nil && !e.notCreatedYet(ex)
	var list []string
	if found {
		list = executionErrors(ex)
	}
	e.mu.Unlock()
	if !found {
		dmfNotFound(w, id)
		return
	}
	b, _ := json.Marshal(list) // strings always marshal
	e.dmfResult(w, "Edm.String", string(b))
}

// errorFileAction implements GenerateImportTargetErrorKeysFile,
// GetImportTargetErrorKeysFileUrl and GetImportStagingErrorFileUrl.
func (e *Emulator) errorFileAction(w http.ResponseWriter, ctx context.Context, action, id, entityName string) {
	e.mu.Lock()
	ex := e.executions[id]
	var ee *EntityExecution
	if ex != nil {
		for i := range ex.Entities {
			c := &ex.Entities[i]
			if strings.EqualFold(c.EntityName, entityName) || strings.EqualFold(c.EntitySet, entityName) || strings.EqualFold(c.entity.Target, entityName) {
				ee = c
			}
		}
	}
	if ex == nil || e.notCreatedYet(ex) {
		e.mu.Unlock()
		dmfNotFound(w, id)
		return
	}
	if ee == nil {
		e.mu.Unlock()
		dmfError(w, fmt.Sprintf("Entity %s is not part of execution %s.", entityName, id))
		return
	}
	done := ex.FinishedAt != nil
	key := strings.ToLower(ee.EntityName)
	var rows []failedRow
	var header []string
	kind := "staging"
	switch action {
	case "GenerateImportTargetErrorKeysFile":
		has := done && len(ee.targets) > 0
		if has {
			if _, asked := ex.keysAsked[key]; !asked {
				ex.keysAsked[key] = time.Now()
			}
		}
		e.mu.Unlock()
		e.dmfResult(w, "Edm.Boolean", has)
		return
	case "GetImportTargetErrorKeysFileUrl":
		asked, ok := ex.keysAsked[key]
		if !ok || time.Since(asked) < e.cfg.DMF.ErrorFileDelay.D() {
			e.mu.Unlock()
			e.dmfResult(w, "Edm.String", "")
			return
		}
		kind, rows = "target-error-keys", ee.targets
		for _, k := range ee.entity.Keys {
			header = append(header, ee.entity.byName[k].StagingName())
		}
	case "GetImportStagingErrorFileUrl":
		if !done || len(ee.failed) == 0 {
			e.mu.Unlock()
			e.dmfResult(w, "Edm.String", "")
			return
		}
		rows, header = ee.failed, ee.header
	}
	fileKey := kind + "|" + key
	existing := ex.files[fileKey]
	ent, entityLabel := ee.entity, ee.EntityName
	e.mu.Unlock()
	if existing != "" {
		e.signErrorFile(w, existing) // a fresh SAS on every call
		return
	}
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	cw.UseCRLF = true
	_ = cw.Write(append(append([]string(nil), header...), "ERROR")) // a bytes.Buffer never fails
	for _, r := range rows {
		var rec []string
		if kind == "staging" {
			rec = append(rec, r.source...)
			for len(rec) < len(header) {
				rec = append(rec, "")
			}
		} else {
			for _, k := range ent.Keys {
				v := r.vals[k]
				if k == dataAreaID {
					v = ex.LegalEntity
				}
				rec = append(rec, cellText(v))
			}
		}
		_ = cw.Write(append(rec, r.msg))
	}
	cw.Flush()
	name := fmt.Sprintf("%s/%s-%s.csv", sanitizeName(ex.ID), sanitizeName(entityLabel), kind)
	if err := e.blobs.put(ctx, errorContainer, name, buf.Bytes()); err != nil {
		writeODataError(w, http.StatusInternalServerError, "The error file could not be stored: "+err.Error(), typeXpp, "")
		return
	}
	e.mu.Lock()
	ex.files[fileKey] = name
	e.mu.Unlock()
	e.signErrorFile(w, name)
}

// signErrorFile answers a read SAS URL of a stored error file.
func (e *Emulator) signErrorFile(w http.ResponseWriter, name string) {
	u, err := e.blobs.signedURL(errorContainer, name, "r", time.Now().Add(e.cfg.DMF.SASLifetime.D()))
	if err != nil {
		writeODataError(w, http.StatusInternalServerError, "The error file URL could not be signed: "+err.Error(), typeXpp, "")
		return
	}
	e.dmfResult(w, "Edm.String", u)
}

// cellText renders a stored value for an error file cell: numbers without
// exponent, dates as stored (ISO 8601), nil as empty.
func cellText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case int64:
		return strconv.FormatInt(x, 10)
	case bool:
		if x {
			return "Yes"
		}
		return "No"
	}
	return fmt.Sprint(v)
}

// fetchPackage downloads the package of ImportFromPackage. The built-in
// store reads its own blobs directly, so the SAS is checked here as Azure
// (or Azurite) would check it.
func (e *Emulator) fetchPackage(ctx context.Context, pkgURL string) ([]byte, error) {
	u, perr := url.Parse(pkgURL)
	if b, ok := e.blobs.(*builtinStore); ok && perr == nil && strings.HasPrefix(pkgURL, b.base+"/") {
		if container, name, ok := splitBlobPath(u.Path); ok && strings.HasPrefix(u.Path, "/_blob/") {
			if code, msg := b.checkSAS(u.Query(), container, name, "r"); code != "" {
				return nil, e.packageDownloadError(pkgURL, u, fmt.Sprintf("the blob service answered 403 %s: %s", code, msg))
			}
		}
	}
	data, err := e.blobs.fetch(ctx, pkgURL, e.cfg.DMF.MaxPackageBytes)
	if err != nil {
		return nil, e.packageDownloadError(pkgURL, u, strings.TrimPrefix(err.Error(), ErrBlob.Error()+": "))
	}
	return data, nil
}

// packageDownloadError phrases a failed package download; a 403 reads as
// .NET's WebException (what F&O's X++ reports), and an expired SAS says so.
func (e *Emulator) packageDownloadError(pkgURL string, u *url.URL, detail string) error {
	if strings.Contains(detail, "answered 403") {
		detail = "The remote server returned an error: (403) Forbidden. (" + detail + ")"
	}
	msg := fmt.Sprintf("The data package could not be downloaded from '%s': %s", logging.RedactURL(pkgURL), detail)
	if u != nil {
		if se, err := time.Parse(time.RFC3339, u.Query().Get("se")); err == nil && time.Now().After(se) {
			msg += fmt.Sprintf(" The shared access signature of the package URL expired at %s (the emulator's SAS URLs are valid for dmf.sas_lifetime, %s). "+
				"Call GetAzureWriteUrl for a new URL, upload the package again and pass the new URL to ImportFromPackage.",
				se.UTC().Format(time.RFC3339), e.cfg.DMF.SASLifetime.D())
		}
	}
	return errors.New(msg)
}

func sanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == '?' || r == '#' || r < ' ' {
			return '_'
		}
		return r
	}, s)
}

// Executions returns copies of all DMF executions in order of submission.
func (e *Emulator) Executions() []Execution {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Execution, 0, len(e.execOrder))
	for _, id := range e.execOrder {
		if ex := e.executions[id]; ex != nil {
			out = append(out, copyExecution(ex))
		}
	}
	return out
}

// Execution returns one execution by ID.
func (e *Emulator) Execution(id string) (Execution, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ex := e.executions[id]
	if ex == nil {
		return Execution{}, false
	}
	return copyExecution(ex), true
}

func copyExecution(ex *Execution) Execution {
	cp := *ex
	cp.Entities = make([]EntityExecution, len(ex.Entities))
	for i, ee := range ex.Entities {
		c := ee
		c.Errors = append([]RowError(nil), ee.Errors...)
		c.staged, c.failed, c.targets = nil, nil, nil
		cp.Entities[i] = c
	}
	cp.InjectedFaults = append([]string(nil), ex.InjectedFaults...)
	cp.pkg, cp.keysAsked, cp.files = nil, nil, nil
	return cp
}

// DMFStats counts the DMF executions the emulator holds (since the start
// or the last Reset; DeleteExecutionHistoryJob removes executions).
type DMFStats struct {
	Executions int `json:"executions"` // executions held
	Running    int `json:"running"`    // NotRun or Executing
	// ParallelImports counts executions submitted while another was
	// running (see Execution.ParallelWith); with dmf.parallel_imports: fail
	// they ended (or will end) Failed.
	ParallelImports int            `json:"parallel_imports"`
	Hung            int            `json:"hung"`             // executions hung by the fault dmf.hang_executing
	InjectedFailed  int            `json:"injected_failed"`  // executions failed by dmf.fail_next_imports
	InjectedPartial int            `json:"injected_partial"` // executions partly failed by dmf.partial_next_imports
	ByStatus        map[string]int `json:"by_status"`        // executions per status
}

// DMFStats returns counts of the DMF executions, e.g. how many were
// submitted in parallel.
func (e *Emulator) DMFStats() DMFStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := DMFStats{ByStatus: map[string]int{}}
	for _, id := range e.execOrder {
		ex := e.executions[id]
		if ex == nil {
			continue
		}
		s.Executions++
		s.ByStatus[ex.Status]++
		if ex.Status == StatusNotRun || ex.Status == StatusExecuting {
			s.Running++
		}
		if ex.ParallelWith != "" {
			s.ParallelImports++
		}
		for _, f := range ex.InjectedFaults {
			switch f {
			case injectedHang:
				s.Hung++
			case injectedFail:
				s.InjectedFailed++
			case injectedPartial:
				s.InjectedPartial++
			}
		}
	}
	return s
}
