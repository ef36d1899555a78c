package foemu_test

import (
	"strings"
	"testing"
)

// TestMalformedRequests sends broken requests to every endpoint: each gets
// a 4xx answer from its handler, never the panic fallback.
func TestMalformedRequests(t *testing.T) {
	a := newAPI(t)
	dmf := "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
	tests := []struct {
		method, path, body, ct string
	}{
		{"GET", "/data/ProductionOrderHeaders(", "", ""},
		{"GET", "/data/ProductionOrderHeaders(dataAreaId=)", "", ""},
		{"GET", "/data/ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber=12)", "", ""},
		{"GET", "/data/ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P1')/Lines", "", ""},
		{"GET", "/data/ProductionOrderHeaders?$filter=((((", "", ""},
		{"GET", "/data/ProductionOrderHeaders?$filter=ScheduledStartDate%20eq%202025-99-99", "", ""},
		{"GET", "/data/ProductionOrderHeaders?$orderby=ItemNumber%20sideways", "", ""},
		{"GET", "/data/ProductionOrderHeaders?$count=maybe", "", ""},
		{"GET", "/data/ProductionOrderHeaders?$skiptoken=x", "", ""},
		{"GET", "/data/ProductionOrderHeaders?$format=xml", "", ""},
		{"POST", "/data/ProductionOrderHeaders", "[1,2]", ""},
		{"POST", "/data/ProductionOrderHeaders", "null", ""},
		{"POST", "/data/ProductionOrderHeaders", `{"a":1}{"b":2}`, ""},
		{"POST", "/data/ProductionOrderHeaders", `{"ScheduledQuantity":1e400}`, ""},
		{"POST", "/data/ProductionOrderHeaders", `{"ScheduledStartDate":"yesterday"}`, ""},
		{"PUT", "/data/ProductionOrderHeaders", "{}", ""},
		{"PATCH", "/data/ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P000101')", "", ""},
		{"POST", "/data/$metadata", "", ""},
		{"GET", "/data/$batch", "", ""},
		{"POST", "/data/$batch", "--b\r\n", "multipart/mixed; boundary=b"},
		{"POST", "/data/$batch", "--b\r\nContent-Type: application/http\r\n\r\nGET\r\n--b--", "multipart/mixed; boundary=b"},
		{"POST", "/data/$batch", "--b\r\nContent-Type: application/http\r\n\r\nPOST $batch HTTP/1.1\r\n\r\n--b--", "multipart/mixed; boundary=b"},
		{"POST", "/data/$batch", "--b\r\nContent-Type: application/http\r\n\r\nPOST http://elsewhere.example/data/X HTTP/1.1\r\n\r\n{}\r\n--b--", "multipart/mixed; boundary=b"},
		{"POST", dmf + "ImportFromPackage", "[]", ""},
		{"POST", dmf + "ImportFromPackage", `{"packageUrl":5}`, ""},
		{"POST", dmf + "ImportFromPackage", `{"packageUrl":"ftp://x","definitionGroupId":"g"}`, ""},
		{"POST", dmf + "ImportFromPackage", `{"packageUrl":"%zz","definitionGroupId":"g"}`, ""},
		{"POST", dmf + "GetAzureWriteUrl", `{"uniqueFileName":"../etc/passwd"}`, ""},
		{"POST", dmf + "GetAzureWriteUrl", `{}`, ""},
		{"POST", dmf + "GetExecutionSummaryStatus", `{"executionId":null}`, ""},
		{"POST", dmf + "GetImportTargetErrorKeysFileUrl", `{"executionId":"nope","entityName":"x"}`, ""},
		{"GET", dmf + "GetExecutionErrors", "", ""},
		{"POST", "/data/DataManagementDefinitionGroups/Nope", "{}", ""},
		{"POST", "/api/services/SysMessageServices/SysMessageService/SendMessage", "[]", ""},
		{"POST", "/api/services/SysMessageServices/SysMessageService/SendMessage", `{"_companyId":1}`, ""},
		{"POST", "/api/services/SysMessageServices/SysMessageService/SendMessage", `{"_companyId":"USMF","_messageQueue":"JmgMES3P","_messageType":"ProdProductionOrderReportFinished","_messageContent":"{\"ProductionOrderNumber\":\"P1\",\"ReportFinishedLines\":[1,\"x\",null]}"}`, ""},
		{"GET", "/api/services/SysMessageServices/SysMessageService/SendMessage", "", ""},
		{"POST", "/t/oauth2/v2.0/token", "%%%", "application/x-www-form-urlencoded"},
		{"POST", "/t/oauth2/v2.0/token", "grant_type=client_credentials&client_id=plantgate-demo&client_assertion=a.b.c&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "application/x-www-form-urlencoded"},
		{"GET", "/t/oauth2/v2.0/token", "", ""},
		{"POST", "/t/v2.0/.well-known/openid-configuration", "", ""},
		{"PUT", "/_blob/dmf", "x", ""},
		{"PUT", "/_blob/dmf/x.zip?sig=abc&se=notatime&sr=b&sp=rcw", "x", ""},
		{"GET", "/_blob/dmf/x.zip?comp=block", "", ""},
		{"PATCH", "/_emulator/faults", "{}", ""},
		{"POST", "/_emulator/faults", `{"rules":[{"route":"odata","latency":"soon"}]}`, ""},
		{"POST", "/_emulator/faults", `{"rules":[{"route":"*","outage":{"mode":"explode"}}]}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			hdr := []string{}
			if tt.ct != "" {
				hdr = append(hdr, "Content-Type", tt.ct)
			}
			r := a.do(tt.method, tt.path, tt.body, hdr...)
			if r.status >= 500 || strings.Contains(string(r.body), "unexpected error occurred in the emulator") {
				t.Errorf("status %d: %s", r.status, r.body)
			}
			batch := tt.method == "POST" && strings.HasSuffix(tt.path, "$batch") // answers 200 with failed parts
			if r.status < 400 && !batch && !strings.Contains(tt.path, "/.well-known") {
				t.Errorf("status %d for a malformed request: %s", r.status, r.body)
			}
		})
	}
	if n := a.em.Stats().Count("odata", 500); n != 0 {
		t.Errorf("%d odata requests answered 500", n)
	}
}
