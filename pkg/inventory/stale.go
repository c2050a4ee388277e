package inventory

import (
	"context"
	"fmt"
	"io"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// WarnStale prints a warning for each Service in ns that kt changed and whose session stopped
// sending heartbeats, so that nobody has to remember a crashed exchange. It never fails.
func WarnStale(ctx context.Context, client kubernetes.Interface, ns string, w io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	svcs, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0
	}
	n := 0
	for _, s := range svcs.Items {
		l, ok := wire.ServiceLock(&s)
		if !ok || time.Since(l.Heartbeat) < cluster.StaleAfter {
			continue
		}
		n++
		fmt.Fprintf(w, "warning: service %s/%s is still %s by %s, whose session stopped sending heartbeats %s ago; run 'kubectl kt recover %s' or 'kubectl kt clean'\n",
			s.Namespace, s.Name, wire.Done(l.Role), l.Owner, time.Since(l.Heartbeat).Round(time.Second), s.Name)
	}
	return n
}
