// Package dmfpkg reads and writes Dynamics 365 Finance & Operations data
// packages: the zip files that the Data management framework (DMF) imports
// through ImportFromPackage.
//
// A package is a flat zip holding Manifest.xml, PackageHeader.xml and one
// data file per entity, named by the manifest's InputFilePath. Both XML
// files live in the namespace
// http://schemas.microsoft.com/dynamics/2015/01/DataManagement and are
// UTF-16 LE with a byte order mark when F&O exports them; UTF-8 files are
// accepted too. Data files in the CSV-Unicode format are UTF-16 LE with a
// byte order mark and CRLF line ends; EXCEL files are .xlsx workbooks.
//
// Read and ReadTable parse untrusted bytes: they bound every size they read
// and return errors (never panic), and they are fuzzed. Build, Manifest.XML
// and WriteCSVUnicode produce packages in the layout F&O exports; the
// emulator's tests and demo use them.
package dmfpkg
