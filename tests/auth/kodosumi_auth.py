"""kodosumi 1.1.0's own auth code, driven by tests/auth (run with the .venv-kodosumi python).

  encode SUB            prints a token from kodosumi's encode_jwt_token (key: KODO_SECRET_KEY)
  decode TOKEN          prints the sub kodosumi's decode_jwt_token reads, or exits 1
  mkdb PATH NAME EMAIL PASSWORD   makes PATH (an admin.db) with kodosumi's Role model and one
                        operator role, as kodosumi's app does on first start; prints its id
"""
import asyncio
import sys


def main() -> int:
    command = sys.argv[1]
    if command == "encode":
        from kodosumi.service.jwt import encode_jwt_token
        print(encode_jwt_token(sys.argv[2]))
        return 0
    if command == "decode":
        from kodosumi.service.jwt import decode_jwt_token
        try:
            print(decode_jwt_token(sys.argv[2]).sub)
        except Exception as e:  # kodosumi's NotAuthorizedException
            print(f"refused: {e}", file=sys.stderr)
            return 1
        return 0
    if command == "mkdb":
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
        from kodosumi.dtypes import Base, Role, RoleCreate
        path, name, email, password = sys.argv[2:6]

        async def make() -> str:
            engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            session = async_sessionmaker(engine)()
            async with session.begin():
                role = Role(**RoleCreate(name=name, email=email, password=password,
                                         operator=True).model_dump())
                session.add(role)
                await session.flush()
                role_id = str(role.id)
            await engine.dispose()
            return role_id

        print(asyncio.run(make()))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
