package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/quorumlock/quorumlock/redlock"
)

// metricsAddrHelp is the --metrics-addr flag's help, shared by the
// commands that take it.
const metricsAddrHelp = "serve the lock's metrics in Prometheus text format at http://ADDR/metrics (e.g. :9464); off when empty"

// metricsOption serves the metrics on addr (see serveMetrics) and returns
// the Client option that records into them, and the function that stops the
// server, within 5 s, once the Client is closed.
func metricsOption(ctx context.Context, addr string, w io.Writer) (redlock.Option, func(), error) {
	mp, stop, err := serveMetrics(addr, w)
	if err != nil {
		return nil, nil, err
	}
	return redlock.WithMeterProvider(mp), func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stop(sctx)
	}, nil
}

// serveMetrics starts an HTTP server on addr that serves, at /metrics, in
// Prometheus text format, what is recorded through the MeterProvider it
// returns (hand it to redlock.WithMeterProvider). The metrics go to a
// registry of their own, not Prometheus' global one. It says on w where it
// serves (the bound address, so ":0" can be used). The returned function
// stops the server and the provider; call it once the Client is closed.
func serveMetrics(addr string, w io.Writer) (*sdkmetric.MeterProvider, func(context.Context) error, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	// service.name is quorumlock unless OTEL_SERVICE_NAME or
	// OTEL_RESOURCE_ATTRIBUTES say otherwise (later detectors win).
	res, err := resource.New(context.Background(),
		resource.WithAttributes(attribute.String("service.name", "quorumlock")),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-addr: resource: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = mp.Shutdown(context.Background())
		return nil, nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(w, "quorumlock: metrics: serving on http://%s/metrics\n", ln.Addr())
	stop := func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if err != nil {
			_ = srv.Close() // a scrape still under way: cut it
		}
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return errors.Join(err, mp.Shutdown(ctx))
	}
	return mp, stop, nil
}
