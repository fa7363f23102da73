//go:build unix

package baton_test

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"time"

	"github.com/baton-go/baton"
)

// The listener is of the same baton type in every generation (created,
// inherited, socket-activated or under baton run), so a type assertion
// made in the first generation keeps working after an upgrade. Assert to
// the interfaces Listen documents, not to *net.TCPListener.
func ExampleUpgrader_Listen_setDeadline() {
	upg, err := baton.New(baton.Options{UpgradeSignal: baton.NoSignal})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	_, isTCP := ln.(*net.TCPListener)
	fmt.Println("*net.TCPListener:", isTCP)
	// On Unix; on Windows SetDeadline returns an error wrapping
	// baton.ErrUnsupported.
	d := ln.(interface{ SetDeadline(time.Time) error })
	if err := d.SetDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		log.Fatal(err)
	}
	_, err = ln.Accept()
	fmt.Println("Accept timed out:", errors.Is(err, os.ErrDeadlineExceeded))
	// Output:
	// *net.TCPListener: false
	// Accept timed out: true
}
