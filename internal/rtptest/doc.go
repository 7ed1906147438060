// Package rtptest is test support for what a subscriber receives of a
// track: the packet trailers publishers append to video frames and a
// recorder of the frames' last packets. Tests import it; gxconf does not.
package rtptest
