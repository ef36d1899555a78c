// Package all links every plugin into a build. Only cmd/ and tests import it.
package all

import (
	// Sources.
	_ "github.com/plantgate/plantgate/plugins/inputs/file"
	_ "github.com/plantgate/plantgate/plugins/inputs/foevents"
	_ "github.com/plantgate/plantgate/plugins/inputs/mqtt"
	_ "github.com/plantgate/plantgate/plugins/inputs/opcua"
	// Sinks.
	_ "github.com/plantgate/plantgate/plugins/outputs/fodmf"
	_ "github.com/plantgate/plantgate/plugins/outputs/fomes"
	_ "github.com/plantgate/plantgate/plugins/outputs/foodata"
	_ "github.com/plantgate/plantgate/plugins/outputs/fooutcomes"
	_ "github.com/plantgate/plantgate/plugins/outputs/mqtt"
	_ "github.com/plantgate/plantgate/plugins/outputs/recorder"
)
