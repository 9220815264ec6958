package deployer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// errInvalidParameters marks a Gateway whose parametersRef cannot be used:
// its status says so (InvalidParameters) instead of the reconcile failing.
var errInvalidParameters = errors.New("invalid parameters")

// parametersResync is how often a Gateway with parameters is looked at
// again, to pick up an edit of its ConfigMap.
const parametersResync = time.Minute

// A waypoint Gateway's spec.infrastructure.parametersRef may name a
// ConfigMap in its namespace. Each key of the ConfigMap sets one of the
// waypoint's settings, overriding istiod-lite's default for this waypoint.
// Only these keys are known; any other is refused, so that a typo is seen
// rather than silently ignored. ConfigMaps are not watched (istiod-lite
// caches only its own), so an edit takes effect within parametersResync.
var parameterKeys = map[string]struct {
	env   string
	check func(string) error
}{
	"rateLimitService": {"RATE_LIMIT_SERVICE", checkHostPort},
	"rateLimitDomain":  {"RATE_LIMIT_DOMAIN", checkDomain},
	"rateLimitTimeout": {"RATE_LIMIT_TIMEOUT", checkTimeout},
}

// parameters returns the waypoint environment that gw's parametersRef
// sets, sorted by name; nil when it has none.
func (d *deployer) parameters(ctx context.Context, gw *gatewayv1.Gateway) ([]corev1.EnvVar, error) {
	if gw.Spec.Infrastructure == nil || gw.Spec.Infrastructure.ParametersRef == nil {
		return nil, nil
	}
	ref := gw.Spec.Infrastructure.ParametersRef
	if ref.Group != "" || ref.Kind != "ConfigMap" {
		return nil, fmt.Errorf("%w: parametersRef %s/%s: a waypoint takes a ConfigMap (group \"\")", errInvalidParameters, ref.Group, ref.Kind)
	}
	var cm corev1.ConfigMap
	if err := d.params.Get(ctx, client.ObjectKey{Namespace: gw.Namespace, Name: ref.Name}, &cm); apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: parametersRef: ConfigMap %s/%s not found", errInvalidParameters, gw.Namespace, ref.Name)
	} else if err != nil {
		return nil, fmt.Errorf("parametersRef ConfigMap %s/%s: %w", gw.Namespace, ref.Name, err)
	}
	env, err := parameterEnv(cm.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: ConfigMap %s/%s: %v", errInvalidParameters, gw.Namespace, ref.Name, err)
	}
	return env, nil
}

// parameterEnv checks a parameters ConfigMap's data and turns it into the
// waypoint's environment.
func parameterEnv(data map[string]string) ([]corev1.EnvVar, error) {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var env []corev1.EnvVar
	for _, k := range keys {
		p, ok := parameterKeys[k]
		if !ok {
			known := make([]string, 0, len(parameterKeys))
			for k := range parameterKeys {
				known = append(known, k)
			}
			sort.Strings(known)
			return nil, fmt.Errorf("unknown key %q (known: %s)", k, strings.Join(known, ", "))
		}
		v := strings.TrimSpace(data[k])
		if err := p.check(v); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		env = append(env, corev1.EnvVar{Name: p.env, Value: v})
	}
	return env, nil
}

func checkHostPort(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil || host == "" {
		return fmt.Errorf("%q: want host:port", v)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: bad port", v)
	}
	return nil
}

func checkDomain(v string) error {
	if v == "" || len(v) > 256 || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return fmt.Errorf("%q: want 1 to 256 printable ASCII characters", v)
	}
	return nil
}

func checkTimeout(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > time.Minute {
		return fmt.Errorf("%q: want a duration between 0 and 1m, such as 20ms", v)
	}
	return nil
}

// overrideEnv returns env with the variables of over replacing those of
// the same name, and the others of over added.
func overrideEnv(env, over []corev1.EnvVar) []corev1.EnvVar {
	for _, o := range over {
		if i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == o.Name }); i >= 0 {
			env[i] = o
		} else {
			env = append(env, o)
		}
	}
	return env
}
