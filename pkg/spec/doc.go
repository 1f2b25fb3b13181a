// Package spec is the declarative YAML job spec: parsing and validation with
// line-precise errors (Parse), the record type its built-in operators exchange (Row)
// with a binary codec, expression evaluation for map and filter (Expr), the keyed
// running aggregate (Aggregator, Acc), and the key rendering used for key groups
// (KeyString, AppendKey).
//
// A spec looks like this:
//
//	name: keyed-count
//	parallelism: 2
//	maxParallelism: 128
//	operators:
//	  - uid: numbers
//	    type: sequence
//	    keys: 100
//	    perKey: 1000
//	  - uid: big
//	    type: filter
//	    input: numbers
//	    expr: 'seq > 10'
//	  - uid: counts
//	    type: aggregate
//	    input: big
//	    keyBy: key
//	    function: count
//	  - uid: show
//	    type: print
//	    input: counts
//
// Operator types: sources sequence and file (without input); transformations map,
// filter and aggregate; sinks file (with an input), print and blackhole.
package spec
