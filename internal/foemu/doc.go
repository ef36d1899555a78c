// Package foemu is the fo-emulator: an in-memory stand-in for Microsoft
// Dynamics 365 Finance & Operations (F&O) and its identity platform, used by
// plantgate's delivery tests, the demo, and integrators rehearsing a plant.
//
// One HTTP(S) listener serves:
//
//	/{tenant}/v2.0/.well-known/openid-configuration   OpenID configuration (MSAL discovery)
//	/{tenant}/oauth2/v2.0/token, /{tenant}/oauth2/token client credentials (secret or assertion)
//	/data/<EntitySet>[(<key>)]                         OData v4: query, create, update, delete
//	/data/$batch                                       multipart batches with atomic changesets
//	/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.<Action>
//	                                                   DMF package API
//	/api/services/SysMessageServices/SysMessageService/SendMessage
//	                                                   MES message service (queue JmgMES3P)
//	/_blob/<container>/<blob>                          built-in blob storage (SAS checked)
//	/_emulator/...                                     inspection, statistics, faults, reset
//
// F&O calls need a bearer token whose audience is exactly the emulator's
// base URL. OData and message service calls are throttled per client (429 +
// Retry-After); DMF calls are exempt, as in F&O. Messages are processed in
// the background per production order and change the seeded production
// orders; DMF imports run through NotRun, Executing and a final status and
// insert the rows of the package into the entity sets.
//
// Behaviour follows the integration facts plantgate collected about F&O;
// where F&O's behaviour is unknown or varies between environments (error
// status of write failures, reused execution IDs, packages without
// EntityMapList, validation of message content), Config makes it a choice.
//
// Use New and Start (or Serve) to run it in-process, foemutest.Start in
// tests, and the fo-emulator command to run it as a process. README.md in
// this directory is the user documentation.
package foemu
