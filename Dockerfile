# custos: multi-stage image. The build stage runs the release build that
# cmd/custos/release_test.go runs too (trimmed paths, stripped symbols).
#   docker build -t custos .                          # every role (DuckDB included)
#   docker build --build-arg TAGS=noduckdb -t custos-lean .   # gateway, decision API, detector
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TAGS=""
RUN CGO_ENABLED=1 go build -trimpath -tags "$TAGS" -ldflags="-s -w" -o /out/custos ./cmd/custos

FROM debian:bookworm-slim
# libstdc++ for DuckDB; ca-certificates for TLS to an identity provider, sinks and engines.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --home-dir /var/lib/custos --create-home custos
COPY --from=build /out/custos /usr/local/bin/custos
USER 65532:65532
VOLUME /var/lib/custos
EXPOSE 7700 7780
ENTRYPOINT ["/usr/local/bin/custos"]
CMD ["serve", "--data", "/var/lib/custos", "--listen", "0.0.0.0:7700"]
