package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/fleet"
	"github.com/fleetgate/fleetgate/controlplane/store"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// configService implements the operator API.
type configService struct {
	fgv1.UnimplementedConfigServiceServer
	store   *store.Store
	fleet   *fleet.Registry
	health  *fleet.HealthCache
	streams *streams
	log     *slog.Logger
}

var _ fgv1.ConfigServiceServer = (*configService)(nil)

func (s *configService) ApplyGateway(ctx context.Context, req *fgv1.ApplyGatewayRequest) (*fgv1.ApplyGatewayResponse, error) {
	if req.GetGateway() == nil {
		return nil, status.Error(codes.InvalidArgument, "gateway: is required")
	}
	gw := proto.Clone(req.GetGateway()).(*fgv1.Gateway)
	if err := s.keepCertificates(ctx, gw); err != nil {
		return nil, toStatus(s.log, err)
	}
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		return nil, toStatus(s.log, err)
	}
	if req.GetDryRun() {
		cur, err := s.store.Get(ctx, gw.GetName())
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, toStatus(s.log, err)
		}
		return &fgv1.ApplyGatewayResponse{Revision: cur.Revision, Gateway: redact(gw)}, nil
	}
	rev, changed, err := s.store.Apply(ctx, gw, req.ExpectedRevision)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	s.log.Info("gateway applied", "gateway", gw.GetName(), "revision", rev, "changed", changed)
	return &fgv1.ApplyGatewayResponse{Revision: rev, Gateway: redact(gw), Changed: changed}, nil
}

func (s *configService) GetGateway(ctx context.Context, req *fgv1.GetGatewayRequest) (*fgv1.GetGatewayResponse, error) {
	st, err := s.store.Get(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	return &fgv1.GetGatewayResponse{Gateway: redact(st.Gateway), Revision: st.Revision}, nil
}

func (s *configService) ListGateways(ctx context.Context, _ *fgv1.ListGatewaysRequest) (*fgv1.ListGatewaysResponse, error) {
	all, _, err := s.store.List(ctx)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	dps, err := s.fleet.List(ctx, "")
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	workers := map[string]int32{}
	for _, dp := range dps {
		workers[dp.GetGateway()]++
	}
	resp := &fgv1.ListGatewaysResponse{}
	for _, st := range all {
		gw := st.Gateway
		resp.Gateways = append(resp.Gateways, &fgv1.GatewaySummary{
			Name:       gw.GetName(),
			Revision:   st.Revision,
			Listeners:  int32(len(gw.GetHttpListeners())),
			Rules:      int32(len(gw.GetRequestRoutingRules())),
			Pools:      int32(len(gw.GetBackendAddressPools())),
			Dataplanes: workers[gw.GetName()],
		})
	}
	return resp, nil
}

func (s *configService) DeleteGateway(ctx context.Context, req *fgv1.DeleteGatewayRequest) (*fgv1.DeleteGatewayResponse, error) {
	rev, err := s.store.Delete(ctx, req.GetName(), req.ExpectedRevision)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	s.log.Info("gateway deleted", "gateway", req.GetName(), "revision", rev)
	return &fgv1.DeleteGatewayResponse{Revision: rev}, nil
}

func (s *configService) ListDataPlanes(ctx context.Context, req *fgv1.ListDataPlanesRequest) (*fgv1.ListDataPlanesResponse, error) {
	dps, err := s.fleet.List(ctx, req.GetGateway())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	desired := map[string]int64{}
	for _, dp := range dps {
		if _, ok := desired[dp.GetGateway()]; ok {
			continue
		}
		st, err := s.store.Get(ctx, dp.GetGateway())
		switch {
		case errors.Is(err, store.ErrNotFound):
			desired[dp.GetGateway()] = 0
		case err != nil:
			return nil, toStatus(s.log, err)
		default:
			desired[dp.GetGateway()] = st.Revision
		}
	}
	for _, dp := range dps {
		dp.DesiredVersion = desired[dp.GetGateway()]
	}
	return &fgv1.ListDataPlanesResponse{Dataplanes: dps}, nil
}

// keepCertificates fills in, from the stored gateway, the data of SSL certificates that an apply
// names without data (as `get` shows them), so that get's output can be applied back.
func (s *configService) keepCertificates(ctx context.Context, gw *fgv1.Gateway) error {
	var missing bool
	for _, c := range gw.GetSslCertificates() {
		if c.GetData() == "" && c.GetCertFile() == "" && c.GetKeyFile() == "" {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	cur, err := s.store.Get(ctx, gw.GetName())
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	stored := map[string]string{}
	for _, c := range cur.Gateway.GetSslCertificates() {
		stored[c.GetName()] = c.GetData()
	}
	for _, c := range gw.GetSslCertificates() {
		if c.GetData() == "" && c.GetCertFile() == "" && c.GetKeyFile() == "" {
			c.Data, c.PublicCertData = stored[c.GetName()], ""
		}
	}
	return nil
}

// redact returns a copy of gw whose SSL certificates show their public chain and no private key.
func redact(gw *fgv1.Gateway) *fgv1.Gateway {
	if len(gw.GetSslCertificates()) == 0 {
		return gw
	}
	gw = proto.Clone(gw).(*fgv1.Gateway)
	for _, c := range gw.GetSslCertificates() {
		c.PublicCertData, c.Data = config.PublicPEM(c.GetData()), ""
	}
	return gw
}
