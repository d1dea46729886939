// Command coredns is CoreDNS with only the plugins the devcluster's cluster DNS
// needs (the kubernetes plugin answers <svc>.<ns>.svc.cluster.local and the
// hostname.subdomain records of Indexed Job pods; forward sends the rest to the
// host's resolver). Fewer plugins than the stock build: a much shorter cold build.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order plugins run in, as in CoreDNS's plugin.cfg (a subset of it).
	dnsserver.Directives = []string{
		"bind", "ready", "health", "errors", "log", "cache", "kubernetes", "forward",
	}
}

func main() {
	coremain.Run()
}
